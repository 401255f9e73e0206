// Issue 9 "Done when": a bounded fuzz test. A real gateway process with three data sources
// (accounts A, B, C, each with its own token and API key, plus a global key) takes tens of
// thousands of mutated Twilio messages, TaskRouter callbacks and API requests from accounts B and
// C (and from nobody), all aimed at account A, while A has a finished recording R_A and a live,
// clean neighbour stream N_A. Afterwards: the process never crashed and /healthz answered
// throughout, every API answer was a well-formed status, B and C never got anything of A's, N_A's
// recording is bit-exact and complete, R_A is byte-identical, and A has no recording it did not
// make.
//
// Seeded: the seed is printed; FUZZ_SEED=<n> replays a run (FUZZ_SEED=random picks a new one).
// FUZZ_WS_MESSAGES, FUZZ_FORMS, FUZZ_API_REQUESTS scale the run.
import t from 'tap';
import http from 'node:http';
import readline from 'node:readline';
import { createHash } from 'node:crypto';
import { readFile, readdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { ChildProcess } from 'node:child_process';
import { TwilioStreamClient, UpgradeRefusedError } from '../loadtest/twilio-stream-client.js';
import { runStream, type RunStreamResult } from '../loadtest/stream-runner.js';
import { trackAudio } from '../loadtest/audio-fixtures.js';
import type { RecordingSidecar } from '../recorder/sidecar.js';
import { sidecarPathOf } from '../recorder/storage-layout.js';
import { decodeWav, audioPathOnDisk } from './fixtures/harness.js';
import { spawnGateway, exitOf, tempDir } from './fixtures/gateway-process.js';
import { Rng } from './fixtures/fuzz-rng.js';
import { firstMessages, nextMessage, type SocketState, type WsTargets } from './fixtures/fuzz-twilio.js';
import { nextForm, type TaskRouterTargets } from './fixtures/fuzz-taskrouter.js';
import { nextApiRequest, nextRawRequest, type ApiRequest, type ApiTargets } from './fixtures/fuzz-api.js';
import { request, rawRequest, isErrorShape, type HttpAnswer } from './fixtures/fuzz-http.js';
import { freePort } from '../loadtest/free-port.js';

// about 30 s on an idle 2-core machine; a loaded one (or a bigger FUZZ_* run) may take longer
t.setTimeout(420_000);

const SEED = ((): number => {
  const env = process.env.FUZZ_SEED;
  if (env === 'random') return Math.floor(Math.random() * 2 ** 31);
  return env !== undefined && env !== '' ? Number(env) : 20261130;
})();
const WS_MESSAGES = Number(process.env.FUZZ_WS_MESSAGES ?? 30_000);
const FORMS = Number(process.env.FUZZ_FORMS ?? 3_000);
const API_REQUESTS = Number(process.env.FUZZ_API_REQUESTS ?? 4_000);
const WS_WORKERS = 6;
const HTTP_CONCURRENCY = 6;
/** /healthz must answer 200 within this, every time it is asked during the run */
const HEALTH_BOUND_MS = 5_000;
const HEALTH_EVERY_MS = 250;

const rng = Rng.for(SEED, 'ids');
const SID = { A: rng.sid('AC'), B: rng.sid('AC'), C: rng.sid('AC') };
const TOKEN = { A: `token-a-${rng.hex(24)}`, B: `token-b-${rng.hex(24)}`, C: `token-c-${rng.hex(24)}` };
const KEY = { A: `key-a-${rng.hex(24)}`, B: `key-b-${rng.hex(24)}`, C: `key-c-${rng.hex(24)}`, global: `key-global-${rng.hex(24)}` };
const PUBLIC_WS = 'wss://rec.example.com/twilio/v1';
const EVENTS_URL = 'https://rec.example.com/twilio/v1/events';
const R_A = { callSid: rng.sid('CA'), streamSid: rng.sid('MZ'), seed: 11, frames: 150, contact: 'A-contact-recorded' };
const N_A = { callSid: rng.sid('CA'), streamSid: rng.sid('MZ'), seed: 23, contact: 'A-contact-live' };
/** a call of A that streams only after the run: B's events and pauses for it must not wait for it */
const LATER_A = { callSid: rng.sid('CA'), streamSid: rng.sid('MZ'), seed: 31, frames: 50, contact: 'A-contact-later' };

/** The first few examples of each kind of failure, and how many there were. */
class Failures {
  readonly byKind = new Map<string, { count: number; examples: string[] }>();
  add(kind: string, example: string): void {
    const f = this.byKind.get(kind) ?? { count: 0, examples: [] };
    f.count++;
    if (f.examples.length < 5) f.examples.push(example.slice(0, 1500));
    this.byKind.set(kind, f);
  }
  get total(): number {
    let n = 0;
    for (const f of this.byKind.values()) n += f.count;
    return n;
  }
  report(): Record<string, unknown> {
    return Object.fromEntries(this.byKind);
  }
}

class Tally {
  readonly counts: Record<string, number> = {};
  add(key: string): void {
    this.counts[key] = (this.counts[key] ?? 0) + 1;
  }
}

interface Gw {
  child: ChildProcess;
  port: number;
  http: string;
  ws: string;
  dir: string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null; stderr: string }>;
  /** log lines at level error or fatal, alarms aside */
  errorLines: string[];
  logLines: () => number;
}


async function startGateway(tap: Tap): Promise<Gw> {
  const dir = await tempDir(tap, 'gw-fuzz-');
  const config = path.join(dir, 'gateway.json');
  await writeFile(config, JSON.stringify({
    API_KEYS: KEY.global,
    dataSources: [
      { TWILIO_ACCOUNT_SID: SID.A, TWILIO_AUTH_TOKEN: TOKEN.A, apiKeys: [KEY.A] },
      { TWILIO_ACCOUNT_SID: SID.B, TWILIO_AUTH_TOKEN: TOKEN.B, apiKeys: [KEY.B] },
      { TWILIO_ACCOUNT_SID: SID.C, TWILIO_AUTH_TOKEN: TOKEN.C, apiKeys: [KEY.C] },
    ],
  }));
  const port = await freePort();
  const recordings = path.join(dir, 'recordings');
  const child = spawnGateway(dir, {
    HOST: '127.0.0.1', PORT: String(port), GATEWAY_CONFIG: config, RECORDINGS_DIR: recordings,
    WEBSOCKET_TARGET_URL: PUBLIC_WS, TWILIO_ENABLE_PAUSE_RESUME: 'true', DRAIN_TIMEOUT_S: '5', LOG_LEVEL: 'info',
  });
  const exited = exitOf(child);
  tap.teardown(() => { if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL'); });
  const errorLines: string[] = [];
  let lines = 0;
  const listening = new Promise<void>((resolve, reject) => {
    readline.createInterface({ input: child.stdout! }).on('line', (line) => {
      lines++;
      if (line.includes('"msg":"gateway listening"')) resolve();
      const level = /^\{"level":(\d+)/.exec(line);
      // alarms are error-level lines by design (audio_dropped for the fuzzers' own bad frames)
      if (level && Number(level[1]) >= 50 && !line.includes('"alarm":true') && errorLines.length < 50) errorLines.push(line.slice(0, 2000));
    });
    void exited.then((e) => reject(new Error(`gateway exited ${e.code}: ${e.stderr}`)));
  });
  await listening;
  return { child, port, http: `http://127.0.0.1:${port}`, ws: `ws://127.0.0.1:${port}/twilio/v1`, dir: recordings, exited, errorLines, logLines: () => lines };
}
type Tap = { teardown(fn: () => unknown): void };

async function api(g: Gw, url: string, key = KEY.global): Promise<{ status: number; body: any }> {
  const res = await fetch(`${g.http}${url}`, { headers: { authorization: `Bearer ${key}` } });
  const text = await res.text();
  return { status: res.status, body: text ? JSON.parse(text) : null };
}

async function until<T>(fn: () => Promise<T> | T, what: string, timeoutMs = 60_000): Promise<NonNullable<T>> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

async function recordingsOf(g: Gw, callSid: string, account: string): Promise<RecordingSidecar[]> {
  const { body } = await api(g, `/v1/recordings?callSid=${callSid}&limit=1000`);
  return (body.items as RecordingSidecar[]).filter((r) => r.accountSid === account);
}

async function allRecordings(g: Gw): Promise<RecordingSidecar[]> {
  const out: RecordingSidecar[] = [];
  let cursor: string | null = null;
  do {
    const { status, body } = await api(g, `/v1/recordings?limit=1000${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`);
    if (status !== 200) throw new Error(`listing recordings: HTTP ${status}`);
    out.push(...(body.items as RecordingSidecar[]));
    cursor = body.nextCursor as string | null;
  } while (cursor);
  return out;
}

async function filesUnder(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const e of await readdir(dir, { withFileTypes: true }).catch(() => [])) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) out.push(...await filesUnder(p));
    else out.push(p);
  }
  return out;
}

const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');

/** Anything of account A in an answer given to B, C or nobody: its account, its recording ids. */
function leaksVictim(value: unknown, victimRecordings: ReadonlySet<string>, liveStreamSid: string): string | null {
  if (Array.isArray(value)) {
    for (const v of value) {
      const found = leaksVictim(v, victimRecordings, liveStreamSid);
      if (found) return found;
    }
    return null;
  }
  if (typeof value !== 'object' || value === null) return null;
  const o = value as Record<string, unknown>;
  if (o.accountSid === SID.A) return `accountSid ${SID.A}`;
  if (typeof o.recordingId === 'string' && victimRecordings.has(o.recordingId)) return `recordingId ${o.recordingId}`;
  // B may reuse R_A's finished streamSid (recorded beside it), never N_A's live one
  if (o.streamSid === liveStreamSid) return `streamSid ${liveStreamSid}`;
  for (const v of Object.values(o)) {
    const found = leaksVictim(v, victimRecordings, liveStreamSid);
    if (found) return found;
  }
  return null;
}

/** Documented 503s of the API (contract sections 4, 6): anything else 5xx is a failure. */
const DOCUMENTED_503 = new Set(['too_many_calls']);

function describe(req: { method: string; url: string; headers: Record<string, string>; body?: string | Buffer }, ans: HttpAnswer | string): string {
  const body = req.body === undefined ? '' : ` body=${JSON.stringify(String(req.body).slice(0, 300))}`;
  const got = typeof ans === 'string' ? ans : `${ans.status} ${ans.body.toString('utf8').slice(0, 300)}`;
  return `${req.method} ${req.url.slice(0, 300)} headers=${JSON.stringify(req.headers).slice(0, 400)}${body} -> ${got}`;
}

/** Common checks of one HTTP answer: no 5xx but documented 503s, errors in the JSON shape. */
function checkAnswer(fail: Failures, where: string, req: { method: string; url: string; headers: Record<string, string>; body?: string | Buffer }, ans: HttpAnswer): void {
  if (ans.status >= 500) {
    let code = '';
    try {
      code = String((JSON.parse(ans.body.toString('utf8')) as { error?: unknown }).error);
    } catch { /* not JSON */ }
    if (!(ans.status === 503 && DOCUMENTED_503.has(code))) fail.add(`${where}: ${ans.status}`, describe(req, ans));
  }
  if (ans.status >= 400 && req.method !== 'HEAD' && !isErrorShape(ans.body, ans.headers['content-type'])) {
    fail.add(`${where}: error not in the JSON shape`, describe(req, ans));
  }
  if (ans.status < 100 || ans.status > 599) fail.add(`${where}: malformed status`, describe(req, ans));
}

t.test(`fuzz: accounts B and C (and strangers) against account A (seed ${SEED})`, { timeout: 400_000 }, async (t) => {
  t.comment(`fuzz seed ${SEED}: replay with FUZZ_SEED=${SEED}`);
  const began = performance.now();
  const g = await startGateway(t);
  const fail = new Failures();
  let crashed = null as string | null; // set by the exit handler: not narrowed to null
  void g.exited.then((e) => { crashed = `gateway exited during the fuzz run: code ${e.code} signal ${e.signal}\n${e.stderr.slice(-3000)}`; });
  const gone = () => crashed !== null;

  // --- before: A's finished recording R_A and live neighbour N_A -------------------------------
  await runStream({
    url: g.ws, authToken: TOKEN.A, signUrl: PUBLIC_WS, accountSid: SID.A, callSid: R_A.callSid, streamSid: R_A.streamSid,
    tracks: ['inbound', 'outbound'], seed: R_A.seed, frames: R_A.frames, realtime: false,
    customParameters: { ctiSessionId: R_A.contact, employeeId: 'emp-A' },
  });
  const [ra] = await until(() => recordingsOf(g, R_A.callSid, SID.A).then((l) => (l.length === 1 ? l : null)), 'R_A published');
  const raSidecarPath = sidecarPathOf(g.dir, ra!);
  const raAudioPath = audioPathOnDisk(g.dir, ra!);
  const raSidecarBefore = await readFile(raSidecarPath);
  const raAudioBefore = await readFile(raAudioPath);
  t.equal(sha256(raAudioBefore), ra!.sha256, 'R_A on disk matches its sidecar sha256');
  const raApiBefore = await api(g, `/v1/recordings/${ra!.recordingId}`);

  const victimRecordings = [ra!.recordingId, `${N_A.streamSid}-0000`];
  const victimSet = new Set(victimRecordings);
  const victimCalls = [R_A.callSid, N_A.callSid, LATER_A.callSid];
  const victimContacts = [R_A.contact, N_A.contact];
  // every HTTP input is made before the run (the event loop of this process stays free for the
  // /healthz probe and the neighbour's pacing); Twilio messages are made as they are sent
  const trTargets: TaskRouterTargets = {
    eventsUrl: EVENTS_URL, victimAccount: SID.A, victimCalls, victimContacts,
    signers: [{ accountSid: SID.B, authToken: TOKEN.B }, { accountSid: SID.C, authToken: TOKEN.C }],
  };
  const trRng = Rng.for(SEED, 'taskrouter');
  const trInputs = Array.from({ length: FORMS }, () => nextForm(trRng, trTargets));
  const apiTargets: ApiTargets = {
    holders: [{ accountSid: SID.B, key: KEY.B }, { accountSid: SID.C, key: KEY.C }],
    foreignKeys: [KEY.A, KEY.global],
    victimAccount: SID.A, victimRecordings, victimCalls, victimContacts, victimEtags: [`"${ra!.sha256}"`, `"${ra!.sha256}-pcm16"`],
  };
  const apiRng = Rng.for(SEED, 'api');
  const apiInputs = Array.from({ length: API_REQUESTS }, () => (apiRng.chance(0.04) ? nextRawRequest(apiRng, apiTargets) : nextApiRequest(apiRng, apiTargets)));

  const neighbourStop = new AbortController();
  const neighbourDone: Promise<RunStreamResult> = runStream({
    url: g.ws, authToken: TOKEN.A, signUrl: PUBLIC_WS, accountSid: SID.A, callSid: N_A.callSid, streamSid: N_A.streamSid,
    tracks: ['inbound', 'outbound'], seed: N_A.seed, frames: Infinity, realtime: true, signal: neighbourStop.signal,
    customParameters: { ctiSessionId: N_A.contact, employeeId: 'emp-A' },
  });
  await until(async () => (await api(g, `/v1/calls?callSid=${N_A.callSid}`)).body.items.length === 1, 'N_A live');

  // --- /healthz throughout ---------------------------------------------------------------------
  let fuzzing = true as boolean; // cleared when the fuzzers finish: not narrowed to true
  const health = { polls: 0, maxMs: 0, maxAt: 0 };
  const fuzzStart = performance.now();
  const healthLoop = (async () => {
    while (fuzzing && !gone()) {
      const t0 = performance.now();
      try {
        const res = await fetch(`${g.http}/healthz`, { signal: AbortSignal.timeout(HEALTH_BOUND_MS) });
        await res.arrayBuffer();
        if (res.status !== 200) fail.add('healthz: not 200', `HTTP ${res.status}`);
      } catch (err) {
        fail.add('healthz: no answer in time', `${(err as Error).message} after ${Math.round(performance.now() - t0)} ms, ${((t0 - fuzzStart) / 1000).toFixed(1)} s into the run`);
      }
      const ms = performance.now() - t0;
      health.polls++;
      if (ms > health.maxMs) {
        health.maxMs = ms;
        health.maxAt = (t0 - fuzzStart) / 1000;
      }
      await new Promise((r) => setTimeout(r, HEALTH_EVERY_MS));
    }
  })();

  // --- (1) Twilio Media Streams messages over WebSockets signed by B and C ----------------------
  const wsTargets: WsTargets = { victimAccount: SID.A, victimCalls, victimStreams: [R_A.streamSid, N_A.streamSid] as const, victimContacts };
  const ws = { messages: 0, sockets: 0, kinds: new Tally(), starts: new Tally(), closes: new Tally(), upgrades: new Tally() };
  const EXPECTED_CLOSES = new Set([1000, 1007, 1008, 1009]);
  let wsSent = 0;
  const terminated = new WeakSet<TwilioStreamClient>();
  const wsWorker = async (w: number) => {
    const r = Rng.for(SEED, `ws-${w}`);
    const signers = [{ sid: SID.B, token: TOKEN.B, other: SID.C }, { sid: SID.C, token: TOKEN.C, other: SID.B }];
    let client: TwilioStreamClient | null = null;
    let state: SocketState | null = null;
    while (wsSent < WS_MESSAGES && !gone()) {
      if (client === null || !client.isOpen) {
        // a new socket: mostly signed by B or C, sometimes unsigned, forged or with a query string
        const signer = r.pick(signers);
        const how = r.weighted<string>([[88, 'signed'], [4, 'unsigned'], [4, 'forged'], [2, 'query'], [2, 'victim-url']]);
        const headers: Record<string, string> = {};
        if (how === 'forged') headers['X-Twilio-Signature'] = r.pick(['', 'AAAA', 'x'.repeat(28)]);
        try {
          client = await TwilioStreamClient.connect(how === 'query' ? `${g.ws}?callSid=${R_A.callSid}` : g.ws, {
            authToken: how === 'unsigned' ? undefined : signer.token,
            signUrl: how === 'victim-url' ? 'wss://evil.example.com/twilio/v1' : PUBLIC_WS,
            headers,
          });
        } catch (err) {
          client = null;
          if (err instanceof UpgradeRefusedError) {
            ws.upgrades.add(`${how}:${err.status}`);
            if (how === 'signed' || err.status >= 500) fail.add(`ws: upgrade ${how} refused ${err.status}`, err.message);
          } else {
            fail.add('ws: connect failed', (err as Error).message);
          }
          continue;
        }
        ws.upgrades.add(`${how}:101`);
        if (how !== 'signed') fail.add(`ws: ${how} upgrade accepted`, `worker ${w}`);
        ws.sockets++;
        const c = client;
        void c.closed.then((info) => {
          ws.closes.add(String(info.code));
          if (!EXPECTED_CLOSES.has(info.code) && !(info.code === 1006 && terminated.has(c))) fail.add(`ws: close code ${info.code}`, info.reason);
        });
        state = {
          account: signer.sid, otherAccount: signer.other, streamSid: r.chance(0.9) ? r.sid('MZ') : '7f1c0c2e-3c4a-4b7e-9a1b-' + r.hex(12),
          callSid: r.chance(0.5) ? r.pick(victimCalls) : r.sid('CA'), tracks: r.pick([['inbound', 'outbound'], ['inbound'], ['outbound']] as const).slice(),
          started: false, ts: 0, seq: 0,
        };
        const first = firstMessages(r, state, wsTargets);
        for (const m of first.inputs) {
          c.sendRaw(m.data, m.binary);
          ws.kinds.add(m.kind);
          wsSent++;
        }
        ws.starts.add(first.variant);
        if (first.refused) {
          // claiming A's account, or A's live streamSid: refused at once, nothing recorded
          const info = await Promise.race([c.closed, new Promise<null>((r) => setTimeout(() => r(null), 15_000))]);
          if (info === null || info.code !== 1008) fail.add(`ws: a start that ${first.variant} was not refused (1008)`, `worker ${w}: ${info === null ? 'still open after 15 s' : `closed ${info.code} ${info.reason}`}`);
          if (info === null) await c.terminate();
        }
        continue;
      }
      const m = nextMessage(r, state!, wsTargets);
      ws.kinds.add(m.kind);
      wsSent++;
      await new Promise<void>((resolve) => client!.sendRaw(m.data, m.binary, () => resolve()));
      if (r.chance(0.004)) {
        // the client goes away: orderly or abruptly
        if (r.chance(0.5)) await client.close();
        else {
          terminated.add(client);
          await client.terminate();
        }
      }
    }
    if (client?.isOpen) await client.close();
  };
  const wsRun = Promise.all(Array.from({ length: WS_WORKERS }, (_, w) => wsWorker(w))).then(() => { ws.messages = wsSent; });

  // --- (2) TaskRouter callbacks ------------------------------------------------------------------
  const tr = { statuses: new Tally(), kinds: new Tally(), resets: 0 };
  const trAgent = new http.Agent({ keepAlive: true, maxSockets: HTTP_CONCURRENCY });
  let trNext = 0;
  const trWorker = async () => {
    while (trNext < trInputs.length && !gone()) {
      const i = trNext++;
      const f = trInputs[i]!;
      tr.kinds.add(f.kind.split('+')[0]!);
      const req = { method: 'POST', url: '/twilio/v1/events', headers: f.headers, body: f.body };
      const big = Buffer.byteLength(f.body) > 64 * 1024;
      let ans: HttpAnswer;
      try {
        ans = await request(big ? new http.Agent() : trAgent, g.port, 'POST', '/twilio/v1/events', f.headers, f.body);
      } catch (err) {
        // a body over the limit may be cut off by the 413 and the server's close
        if (big) tr.resets++;
        else fail.add('taskrouter: transport error', `#${i} ${describe(req, (err as Error).message)}`);
        continue;
      }
      tr.statuses.add(String(ans.status));
      checkAnswer(fail, 'taskrouter', req, ans);
      if (![204, 400, 403, 413, 415].includes(ans.status)) fail.add(`taskrouter: unexpected ${ans.status}`, `#${i} ${describe(req, ans)}`);
      if (ans.status === 204 && f.kind.startsWith('claims-victim')) fail.add('taskrouter: a form claiming account A was accepted', `#${i} ${describe(req, ans)}`);
      if (ans.status === 204 && /^(unsigned|forged|tampered|json-body|content-type)/.test(f.kind)) fail.add(`taskrouter: ${f.kind} accepted`, `#${i} ${describe(req, ans)}`);
    }
  };
  const trRun = Promise.all(Array.from({ length: HTTP_CONCURRENCY }, trWorker));

  // --- (3) API requests with B's and C's keys, no key, invalid keys -----------------------------
  /** 2xx answers to B or C acting on their own state for A's callSids (never A's calls) */
  const apiStats = { statuses: new Tally(), kinds: new Tally(), raw: new Tally(), onVictimCalls: new Tally(), resets: 0 };
  const apiAgent = new http.Agent({ keepAlive: true, maxSockets: HTTP_CONCURRENCY });
  const checkApi = (i: number, req: ApiRequest, ans: HttpAnswer) => {
    apiStats.statuses.add(String(ans.status));
    checkAnswer(fail, 'api', req, ans);
    const ok = ans.status >= 200 && ans.status < 400;
    if (ok && req.auth.kind !== 'key') fail.add(`api: ${req.auth.kind} key got ${ans.status}`, `#${i} ${describe(req, ans)}`);
    if (ok && req.aimsAtVictim) fail.add(`api: ${req.kind} of account A answered ${ans.status} to ${req.auth.kind === 'key' ? req.auth.accountSid : req.auth.kind}`, `#${i} ${describe(req, ans)}`);
    if (ok && String(ans.headers['content-type'] ?? '').includes('json') && req.method !== 'HEAD') {
      let parsed: unknown = null;
      try {
        parsed = JSON.parse(ans.body.toString('utf8'));
      } catch {
        fail.add('api: 2xx JSON that does not parse', `#${i} ${describe(req, ans)}`);
      }
      const leak = leaksVictim(parsed, victimSet, N_A.streamSid);
      if (leak) fail.add(`api: account A's data (${leak.split(' ')[0]}) in an answer to another account`, `#${i} ${leak}: ${describe(req, ans)}`);
    }
    if (ok && req.auth.kind === 'key' && /^(pause|cti)$/.test(req.kind)) {
      let account: string | undefined;
      try {
        const b = JSON.parse(ans.body.toString('utf8')) as { accountSid?: string; callSid?: string; paused?: boolean };
        account = b.accountSid;
        const which = b.callSid === R_A.callSid ? 'R_A' : b.callSid === N_A.callSid ? 'N_A' : b.callSid === LATER_A.callSid ? 'LATER_A' : null;
        if (which) apiStats.onVictimCalls.add(`${req.kind === 'cti' ? 'event' : b.paused ? 'paused' : 'resumed'}:${which}`);
      } catch { /* reported above */ }
      if (account !== req.auth.accountSid) fail.add(`api: ${req.kind} acted on account ${account} for a key of ${req.auth.accountSid}`, `#${i} ${describe(req, ans)}`);
    }
  };
  let apiNext = 0;
  const apiWorker = async () => {
    while (apiNext < apiInputs.length && !gone()) {
      const i = apiNext++;
      const input = apiInputs[i]!;
      if ('bytes' in input) {
        apiStats.kinds.add('raw');
        const answer = await rawRequest(g.port, input.bytes).catch((err: Error) => err);
        if (answer instanceof Error) {
          fail.add('api: raw request', `#${i} ${input.kind}: ${answer.message}`);
          continue;
        }
        const text = answer.toString('latin1');
        const status = /^HTTP\/1\.[01] (\d{3})/.exec(text);
        apiStats.raw.add(`${input.kind}:${status ? status[1] : 'closed'}`);
        if (answer.length > 0 && !status) fail.add('api: raw answer is not HTTP', `#${i} ${input.kind}: ${JSON.stringify(text.slice(0, 200))}`);
        if (status) {
          const code = Number(status[1]);
          const head = text.slice(0, text.indexOf('\r\n\r\n'));
          const length = /\r\ncontent-length: *(\d+)/i.exec(head);
          const body = length ? answer.subarray(head.length + 4, head.length + 4 + Number(length[1])) : Buffer.alloc(0);
          const type = /\r\ncontent-type: *([^\r]*)/i.exec(head)?.[1];
          const req = { method: 'RAW', url: input.kind, headers: {}, body: input.bytes.subarray(0, 300) };
          checkAnswer(fail, 'api raw', req, { status: code, headers: { 'content-type': type }, body });
          if (code >= 200 && code < 400) {
            let parsed: unknown = null;
            try { parsed = JSON.parse(body.toString('utf8')); } catch { /* audio or empty */ }
            const leak = leaksVictim(parsed, victimSet, N_A.streamSid);
            if (leak || !parsed) fail.add(`api raw: ${code}`, `#${i} ${input.kind}: ${JSON.stringify(input.bytes.toString('latin1').slice(0, 300))} -> ${text.slice(0, 300)}`);
          }
        }
        continue;
      }
      apiStats.kinds.add(input.kind);
      const big = input.body !== undefined && Buffer.byteLength(input.body) > 1024 * 1024;
      let ans: HttpAnswer;
      try {
        ans = await request(big ? new http.Agent() : apiAgent, g.port, input.method, input.url, input.headers, input.body);
      } catch (err) {
        if (big) apiStats.resets++;
        else fail.add('api: transport error', `#${i} ${describe(input, (err as Error).message)}`);
        continue;
      }
      checkApi(i, input, ans);
    }
  };
  const apiRun = Promise.all(Array.from({ length: HTTP_CONCURRENCY }, apiWorker));

  await Promise.all([wsRun, trRun, apiRun]);
  fuzzing = false;
  await healthLoop;
  trAgent.destroy();
  apiAgent.destroy();
  const fuzzSeconds = (performance.now() - began) / 1000;
  t.comment(`fuzz inputs: ${ws.messages} Twilio messages on ${ws.sockets} sockets, ${FORMS} TaskRouter forms, ${API_REQUESTS} API requests; ${fuzzSeconds.toFixed(1)} s; /healthz ${health.polls} polls, slowest ${Math.round(health.maxMs)} ms (at ${health.maxAt.toFixed(1)} s)`);
  t.comment(`ws sockets by first start ${JSON.stringify(ws.starts.counts)}`);
  t.comment(`ws kinds ${JSON.stringify(ws.kinds.counts)} closes ${JSON.stringify(ws.closes.counts)} upgrades ${JSON.stringify(ws.upgrades.counts)}`);
  t.comment(`taskrouter ${JSON.stringify(tr.statuses.counts)} kinds ${JSON.stringify(tr.kinds.counts)} cut off ${tr.resets}`);
  t.comment(`api ${JSON.stringify(apiStats.statuses.counts)} kinds ${JSON.stringify(apiStats.kinds.counts)} raw ${JSON.stringify(apiStats.raw.counts)} cut off ${apiStats.resets}`);

  t.comment(`B/C acted on their own view of A's callSids: ${JSON.stringify(apiStats.onVictimCalls.counts)}`);
  t.equal(crashed, null, 'the gateway process never exited during the run');
  if (crashed) return;
  t.ok(health.polls > 0, '/healthz was polled during the run');
  t.ok(ws.messages >= WS_MESSAGES && ws.sockets > WS_WORKERS, 'every Twilio message was sent, over reconnecting sockets');

  // --- after: the neighbour stream ends cleanly --------------------------------------------------
  neighbourStop.abort();
  const sent = await neighbourDone;
  t.equal(sent.closedEarly, false, 'N_A was never closed by the gateway');
  t.equal(sent.closeCode, 1000, 'N_A ended with a normal close');
  const [na] = await until(() => recordingsOf(g, N_A.callSid, SID.A).then((l) => (l.length > 0 ? l : null)), 'N_A published');
  const naAll = await recordingsOf(g, N_A.callSid, SID.A);
  t.equal(naAll.length, 1, 'N_A is one recording');
  t.match(na, {
    recordingId: `${N_A.streamSid}-0000`, accountSid: SID.A, callSid: N_A.callSid, streamSid: N_A.streamSid,
    ctiSessionId: N_A.contact, employeeId: 'emp-A', closeReason: 'stop',
    framesReceived: sent.framesSent.inbound + sent.framesSent.outbound, framesMissing: 0, framesDuplicate: 0, framesTooLate: 0,
    pausedIntervals: [],
  }, 'N_A: every frame received, none missing, never paused, attribution its own');
  t.notOk(na!.framesPaused, 'N_A: no frame dropped for a pause');
  t.notOk(na!.writeError, 'N_A: no write error');
  const naAudio = await readFile(audioPathOnDisk(g.dir, na!));
  t.equal(sha256(naAudio), na!.sha256, 'N_A on disk matches its sidecar');
  const decoded = decodeWav(naAudio);
  t.equal(decoded.channels, 2);
  const frames = sent.framesSent.inbound;
  t.equal(sent.framesSent.outbound, frames);
  t.ok(Buffer.from(decoded.channel[0]!).equals(trackAudio(N_A.seed, 'inbound', frames)), `N_A inbound is bit-exact (${frames} frames, ${(frames / 50).toFixed(1)} s)`);
  t.ok(Buffer.from(decoded.channel[1]!).equals(trackAudio(N_A.seed, 'outbound', frames)), 'N_A outbound is bit-exact');

  // --- R_A unchanged --------------------------------------------------------------------------
  t.ok((await readFile(raSidecarPath)).equals(raSidecarBefore), 'R_A sidecar is byte-identical (no re-attribution)');
  t.ok((await readFile(raAudioPath)).equals(raAudioBefore), 'R_A audio is byte-identical (not deleted, not paused)');
  t.same(await api(g, `/v1/recordings/${ra!.recordingId}`), raApiBefore, 'R_A is listed as before');

  // --- A has exactly what A recorded ---------------------------------------------------------
  await until(async () => (await api(g, '/v1/calls')).body.items.length === 0, 'every fuzz stream finalised');
  const all = await allRecordings(g);
  const ofA = all.filter((r) => r.accountSid === SID.A).map((r) => r.recordingId).sort();
  t.same(ofA, [...victimRecordings].sort(), 'account A has R_A and N_A, nothing else');
  t.same((await api(g, '/v1/recordings?limit=1000', KEY.A)).body.items.map((r: RecordingSidecar) => r.recordingId).sort(), ofA, "A's own key sees the same");
  const onDisk = (await filesUnder(path.join(g.dir, SID.A))).map((f) => path.basename(f)).sort();
  t.same(onDisk, [ra!.audioFile, `${ra!.recordingId}.json`, na!.audioFile, `${na!.recordingId}.json`].sort(), "A's folder holds exactly those files");
  t.ok(all.every((r) => r.accountSid === SID.A || r.accountSid === SID.B || r.accountSid === SID.C), 'every recording belongs to a configured account');
  t.comment(`recordings made by B and C during the run: ${all.length - ofA.length}`);

  // --- A's own calls still behave as A says, whatever B and C said about their callSids --------
  // a call of A streaming now: not paused, not deleted, not attributed by B's or C's events
  await runStream({
    url: g.ws, authToken: TOKEN.A, signUrl: PUBLIC_WS, accountSid: SID.A, callSid: LATER_A.callSid, streamSid: LATER_A.streamSid,
    tracks: ['inbound', 'outbound'], seed: LATER_A.seed, frames: LATER_A.frames, realtime: false,
    customParameters: { ctiSessionId: LATER_A.contact, employeeId: 'emp-A' },
  });
  const [later] = await until(() => recordingsOf(g, LATER_A.callSid, SID.A).then((l) => (l.length > 0 ? l : null)), 'LATER_A published');
  if (API_REQUESTS >= 1000) t.ok(apiStats.onVictimCalls.counts['paused:LATER_A']! > 0, 'B or C paused (their view of) the later call\'s callSid during the run');
  t.match(later, {
    ctiSessionId: LATER_A.contact, employeeId: 'emp-A', pausedIntervals: [], framesReceived: 2 * LATER_A.frames, framesMissing: 0,
  }, 'a later call of A (whose callSid B and C paused, rejected and attributed) records in full, as A said');
  t.notOk(later!.framesPaused, 'no frame of it paused');
  const laterWav = decodeWav(await readFile(audioPathOnDisk(g.dir, later!)));
  t.ok(Buffer.from(laterWav.channel[0]!).equals(trackAudio(LATER_A.seed, 'inbound', LATER_A.frames))
    && Buffer.from(laterWav.channel[1]!).equals(trackAudio(LATER_A.seed, 'outbound', LATER_A.frames)), 'and bit-exact');
  // A's own not_responding deletes R_A: no `connected` of B or C kept A's call
  const othersOnRaCall = all.filter((r) => r.callSid === R_A.callSid && r.accountSid !== SID.A).map((r) => r.recordingId).sort();
  const del = await fetch(`${g.http}/v1/cti/events`, {
    method: 'POST', headers: { authorization: `Bearer ${KEY.A}`, 'content-type': 'application/json' },
    body: JSON.stringify({ type: 'not_responding', callSid: R_A.callSid }),
  });
  t.equal(del.status, 200, "A's not_responding for R_A's call");
  t.equal((await api(g, `/v1/recordings/${ra!.recordingId}`)).status, 404, 'R_A deleted by its own account: B and C never marked it kept');
  t.notOk(await readFile(raAudioPath).then(() => true, () => false), "R_A's audio is gone");
  t.same((await allRecordings(g)).filter((r) => r.callSid === R_A.callSid && r.accountSid !== SID.A).map((r) => r.recordingId).sort(), othersOnRaCall,
    `B's and C's own recordings on that callSid (${othersOnRaCall.length}) are untouched by A's event`);

  // --- no failure of any kind; the process ends cleanly --------------------------------------
  t.same(fail.report(), {}, `no failures (seed ${SEED})`);
  t.same(g.errorLines, [], 'no error-level log line');
  g.child.kill('SIGTERM');
  const exit = await g.exited;
  t.equal(exit.code, 0, `the gateway drained and exited 0 after ${g.logLines()} log lines`);
  t.comment(`total ${((performance.now() - began) / 1000).toFixed(1)} s`);
});
