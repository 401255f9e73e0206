// The jitter window: places mu-law frames by their sample position (media.timestamp * 8) into
// one small ring per channel, and hands finished regions to a sink in order (the sink
// interleaves them once per region, not per frame: a frame is one memcpy). Everything here is arithmetic on preallocated arrays: no I/O, no clock, no allocation
// per frame. Holes left when a region is emitted are mu-law silence (0xFF).
//
// Positions are absolute sample indexes on the stream's clock; `flushed` is the first sample
// not yet emitted. A frame may land anywhere in [flushed, flushed + windowSamples); one that
// ends beyond that pushes the window forward first (emitting the oldest audio), one that starts
// before `flushed` lost its chance and is dropped as too late.

import { MULAW_SILENCE } from '../codecs/g711.js';

export type PlaceResult = 'placed' | 'late' | 'duplicate' | 'too_late';

/** What the timeline knows about one emitted region, per channel. */
export interface RegionCoverage {
  /** samples in the region that came from frames */
  covered: number[];
  /** absolute index of the first covered sample, -1 when none */
  firstCovered: number[];
  /** absolute index one past the last covered sample, -1 when none */
  lastCoveredEnd: number[];
  /** Clock value at which the oldest frame in this region arrived (NaN when all silence). */
  oldestArrival: number;
}

export interface TimelineSink {
  /**
   * Audio for absolute samples [from, from + samples): channel c is
   * `planes[c][offset .. offset + samples)`. The planes are the ring itself and are overwritten
   * after the call returns: copy what you keep. Regions never cross a multiple of `boundarySamples`.
   */
  emit(planes: readonly Buffer[], offset: number, samples: number, from: number, coverage: RegionCoverage): void;
}

export interface TimelineOptions {
  channels: 1 | 2;
  /** how far behind the newest sample a frame may still be put in place */
  windowSamples: number;
  /** granularity of emission while the stream runs; windowSamples must be a multiple */
  chunkSamples: number;
  /** regions are split at multiples of this (segment rotation) */
  boundarySamples: number;
}

export class Timeline {
  readonly channels: 1 | 2;
  private readonly window: number;
  private readonly chunk: number;
  private readonly boundary: number;
  private readonly planes: Buffer[];
  private readonly covered: Uint8Array[];
  /** earliest arrival (clock units) of a frame per chunk slot of the ring */
  private readonly slotArrival: Float64Array;
  private readonly coverage: RegionCoverage;
  private readonly sink: TimelineSink;
  /** first sample not yet emitted */
  flushed = 0;
  /** one past the newest sample placed on any channel */
  frontier = 0;
  /** per channel: one past the newest sample placed */
  readonly channelEnd: number[];

  constructor(opts: TimelineOptions, sink: TimelineSink) {
    if (opts.windowSamples % opts.chunkSamples !== 0) throw new RangeError('windowSamples must be a multiple of chunkSamples');
    if (opts.boundarySamples % opts.chunkSamples !== 0) throw new RangeError('boundarySamples must be a multiple of chunkSamples');
    this.channels = opts.channels;
    this.window = opts.windowSamples;
    this.chunk = opts.chunkSamples;
    this.boundary = opts.boundarySamples;
    this.sink = sink;
    this.planes = [];
    this.covered = [];
    for (let c = 0; c < this.channels; c++) {
      this.planes.push(Buffer.alloc(this.window, MULAW_SILENCE));
      this.covered.push(new Uint8Array(this.window));
    }
    this.slotArrival = new Float64Array(this.window / this.chunk).fill(NaN);
    this.channelEnd = new Array<number>(this.channels).fill(0);
    this.coverage = {
      covered: new Array<number>(this.channels).fill(0),
      firstCovered: new Array<number>(this.channels).fill(-1),
      lastCoveredEnd: new Array<number>(this.channels).fill(-1),
      oldestArrival: NaN,
    };
  }

  /**
   * Put `payload[0..length)` of channel `channel` at absolute sample `start`.
   * `arrival` is the caller's clock reading for this frame (for frame-to-disk lag). The payload
   * starts at `payload[offset]` (a journal buffer: no copy before the ring's).
   */
  place(channel: number, start: number, payload: Buffer, length: number, arrival: number, offset = 0): PlaceResult {
    const end = start + length;
    if (end <= this.flushed) return 'too_late';
    if (end > this.flushed + this.window) this.advanceTo(end - this.window);
    // `channel` < channels: the caller got it from channelOf and turned away -1.
    const cov = this.covered[channel]!;
    const w = this.window;
    // Skip what was already emitted (a frame straddling `flushed`).
    const from = start < this.flushed ? this.flushed : start;
    // A duplicate: every sample already there. Frames are contiguous runs, so checking the
    // first and last sample is enough for Twilio's aligned frames; partial overlaps overwrite.
    if (cov[from % w] === 1 && cov[(end - 1) % w] === 1) return 'duplicate';
    const late = end <= this.channelEnd[channel]! || start < this.flushed;
    // Copy in at most two runs (the ring may wrap), without a modulo per sample.
    let src = offset + from - start;
    let pos = from % w;
    let left = end - from;
    const plane = this.planes[channel]!;
    while (left > 0) {
      const run = Math.min(left, w - pos);
      payload.copy(plane, pos, src, src + run);
      cov.fill(1, pos, pos + run);
      src += run;
      left -= run;
      pos = 0;
    }
    const slotFirst = Math.floor((from % w) / this.chunk);
    const slotLast = Math.floor(((end - 1) % w) / this.chunk);
    this.noteArrival(slotFirst, arrival);
    if (slotLast !== slotFirst) this.noteArrival(slotLast, arrival);
    if (end > this.channelEnd[channel]!) this.channelEnd[channel] = end;
    if (end > this.frontier) this.frontier = end;
    return late ? 'late' : 'placed';
  }

  /** Emit everything up to the newest sample (end of stream or segment close). */
  flushAll(): void {
    this.emitUpTo(this.frontier);
  }

  /** Emit everything before `sample` (all channels), padding with silence. */
  emitUpTo(sample: number): void {
    if (sample <= this.flushed) return;
    // Whole windows of nothing but silence need no ring work, but must still be emitted.
    while (sample - this.flushed > 0) {
      const boundaryEnd = (Math.floor(this.flushed / this.boundary) + 1) * this.boundary;
      const ringEnd = this.flushed - (this.flushed % this.window) + this.window;
      const to = Math.min(sample, boundaryEnd, ringEnd, this.flushed + this.window);
      this.emitRegion(this.flushed, to);
    }
    if (sample > this.frontier) this.frontier = sample;
  }

  private advanceTo(newFlushed: number): void {
    // Keep emission chunk-aligned while the stream runs: fewer, larger writes.
    const aligned = Math.ceil(newFlushed / this.chunk) * this.chunk;
    this.emitUpTo(aligned);
  }

  private noteArrival(slot: number, arrival: number): void {
    const prev = this.slotArrival[slot]!;
    if (!(prev <= arrival)) this.slotArrival[slot] = arrival; // NaN-safe min
  }

  /** Emit [from, to): never crosses the ring end or a boundary. */
  private emitRegion(from: number, to: number): void {
    const w = this.window;
    const ch = this.channels;
    const a = from % w;
    const n = to - from;
    const cv = this.coverage;
    cv.oldestArrival = NaN;
    for (let c = 0; c < ch; c++) {
      const cov = this.covered[c]!;
      let count = 0;
      let first = -1;
      let last = -1;
      // A region is usually all frames or all gap: native scans (memchr) settle both without a
      // JavaScript loop over its samples; only a partly covered region is counted sample by sample.
      const hole = cov.indexOf(0, a);
      if (hole < 0 || hole >= a + n) {
        count = n;
        first = a;
        last = a + n - 1;
      } else {
        const f = cov.indexOf(1, a);
        if (f >= 0 && f < a + n) {
          first = f;
          for (let i = f; i < a + n; i++) {
            if (cov[i] === 1) {
              count++;
              last = i;
            }
          }
        }
      }
      cv.covered[c] = count;
      cv.firstCovered[c] = first < 0 ? -1 : from + (first - a);
      cv.lastCoveredEnd[c] = last < 0 ? -1 : from + (last - a) + 1;
    }
    const slotA = Math.floor(a / this.chunk);
    const slotB = Math.floor((a + n - 1) / this.chunk);
    for (let s = slotA; s <= slotB; s++) {
      const t = this.slotArrival[s]!;
      if (!(cv.oldestArrival <= t) && !Number.isNaN(t)) cv.oldestArrival = t;
    }
    this.sink.emit(this.planes, a, n, from, cv);
    // Reset what was emitted so the ring slots start as silence for the next lap.
    for (let c = 0; c < ch; c++) {
      this.planes[c]!.fill(MULAW_SILENCE, a, a + n);
      this.covered[c]!.fill(0, a, a + n);
    }
    // A slot's arrival is cleared only when the region ends on its end (slots are shared).
    for (let s = slotA; s <= slotB; s++) {
      const slotEnd = (s + 1) * this.chunk;
      if (a + n >= slotEnd) this.slotArrival[s] = NaN;
    }
    this.flushed = to;
  }
}
