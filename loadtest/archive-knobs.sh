#!/bin/bash
# CPU (user + sys, /usr/bin/time) of one ffmpeg run per Opus setting, interleaved N rounds, on one
# stereo mu-law WAV (BENCHMARKS.md, issue 13, "knob by knob"). Run it under the bench lock:
#   flock /work/bench.lock loadtest/archive-knobs.sh WAV [N=5]
# A 5-minute WAV of the bench's conversation: node --import tsx -e "import('./loadtest/conversation.ts').then(async (m) => require('fs').writeFileSync('/tmp/call5.wav', await m.conversationWav(300)))"
set -eu
W=$1 N=${2:-5}
T=$(mktemp -d /tmp/archive-knobs-XXXXXX)
trap 'rm -rf "$T"' EXIT
C="-hide_banner -nostats -v error -filter_threads 1 -threads 1 -nostdin"
B="-map_metadata -1 -fflags +bitexact -flags:a +bitexact"
O="-c:a libopus -b:a 16k -application voip -compression_level 0 -frame_duration 120 -mapping_family 255 -threads 1"
declare -A V
V[current]="$C -i $W $B $O -f ogg -y $T/cur.opus"   # what the pool runs (formats.ts)
V[start-only]="$C -i $W -t 0.1 $B $O -f ogg -y $T/start.opus"
V[version]="-version"
V[wav-decode-null]="$C -i $W -f null -"
V[frame60]="$C -i $W $B ${O/-frame_duration 120/-frame_duration 60} -f ogg -y $T/f60.opus"
V[level10]="$C -i $W $B ${O/-compression_level 0/-compression_level 10} -f ogg -y $T/cl10.opus"
V[cbr]="$C -i $W $B $O -vbr off -f ogg -y $T/cbr.opus"
V[app-audio]="$C -i $W $B ${O/voip/audio} -f ogg -y $T/audio.opus"
V[12k]="$C -i $W $B ${O/16k/12k} -f ogg -y $T/b12.opus"
V[24k]="$C -i $W $B ${O/16k/24k} -f ogg -y $T/b24.opus"
V[batch4]="$C -i $W -i $W -i $W -i $W $B -map 0:a $O -f ogg -y $T/q0.opus -map 1:a $O -f ogg -y $T/q1.opus -map 2:a $O -f ogg -y $T/q2.opus -map 3:a $O -f ogg -y $T/q3.opus"
K="current start-only version wav-decode-null frame60 level10 cbr app-audio 12k 24k batch4"
# the verifying decodes read what `current` wrote: run it once first
ffmpeg ${V[current]} >/dev/null
V[verify-8k-wav]="$C -i $T/cur.opus -ar 8000 -c:a pcm_s16le -fflags +bitexact -f wav -y /dev/null"   # before (decodeWav)
V[verify-48k-null]="$C -xerror -i $T/cur.opus -ar 48000 -c:a pcm_s16le -f s16le -y /dev/null"   # now (decodedPcm48kBytes)
V[verify-libopus-8k]="$C -c:a libopus -i $T/cur.opus -ar 8000 -c:a pcm_s16le -f wav -y /dev/null"
K="$K verify-8k-wav verify-48k-null verify-libopus-8k"
for i in $(seq "$N"); do
  for k in $K; do /usr/bin/time -f "%U %S" -a -o "$T/t.$k" ffmpeg ${V[$k]} >/dev/null; done
done
echo "| setting | CPU s per run, sorted | median | bytes |"
echo "|---|---|---|---|"
for k in $K; do
  s=$(awk '{print $1+$2}' "$T/t.$k" | sort -n | tr '\n' ' ')
  med=$(awk '{print $1+$2}' "$T/t.$k" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
  f=$(ls "$T" | grep -c . >/dev/null; echo "${V[$k]}" | grep -o "$T/[a-z0-9]*\.opus" | head -1 || true)
  echo "| $k | $s| $med | $( [ -n "$f" ] && stat -c %s "$f" || echo -) |"
done
