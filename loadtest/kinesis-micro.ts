// Micro-benchmarks behind the Kinesis apply costs (BENCHMARKS.md, Kinesis agent events), on one
// thread, no I/O:
//  - the structured clone of one GetRecords' batch (100 mapped events) into the main thread,
//    as an object per event and as columns (worker-protocol.ts MappedBatch): v8.serialize and
//    v8.deserialize, the serializer postMessage uses, each paid on one side;
//  - CallStates at its cap: CPU per new call when every new call must evict (run it in a tree
//    whose recorder/call-states.ts is the one to measure).
//   node --import tsx loadtest/kinesis-micro.ts
import v8 from 'node:v8';
import { CallStates, MAX_CALL_STATES } from '../recorder/call-states.js';
import { randomSid } from './sids.js';

function clone(): void {
  const N = 100;
  const at = new Date().toISOString();
  const objects = Array.from({ length: N }, (_, i) => ({
    id: `NO${String(i).padStart(32, '0')}`, arrival: Date.now(),
    events: [{ type: 'ringing', callSid: randomSid('CA'), ctiSessionId: 'WT00000000000000000000000000000001', employeeId: 'WK1', at }],
  }));
  const columns = {
    ids: objects.map((e) => e.id), arrivals: objects.map((e) => e.arrival), counts: objects.map(() => 1),
    types: objects.map((e) => e.events[0]!.type), callSids: objects.map((e) => e.events[0]!.callSid),
    ctiSessionIds: objects.map((e) => e.events[0]!.ctiSessionId), employeeIds: objects.map((e) => e.events[0]!.employeeId),
    at: objects.map((e) => e.events[0]!.at),
  };
  for (const [name, v] of [['object per event', objects], ['columns', columns]] as const) {
    const R = 3000;
    let buf = v8.serialize(v);
    let t = performance.now();
    for (let i = 0; i < R; i++) buf = v8.serialize(v);
    const ser = ((performance.now() - t) * 1000) / R;
    t = performance.now();
    for (let i = 0; i < R; i++) v8.deserialize(buf);
    const de = ((performance.now() - t) * 1000) / R;
    console.log(`batch of ${N} as ${name}: ${buf.length} bytes, serialize ${ser.toFixed(0)} us, deserialize ${de.toFixed(0)} us (${((ser + de) / N).toFixed(2)} us per event)`);
  }
}

function states(): void {
  const st = new CallStates(3_600_000, () => new Date());
  let n = 0;
  // as CallControl.applyEvent: get or create, then touch
  const add = () => st.touch(st.getOrCreate('AC1', `CA${(n++).toString(16).padStart(32, '0')}`));
  for (let i = 0; i < MAX_CALL_STATES; i++) add();
  for (let r = 0; r < 3; r++) {
    const t = performance.now();
    for (let i = 0; i < 100_000; i++) add();
    console.log(`CallStates at its cap (${MAX_CALL_STATES}): ${(((performance.now() - t) * 1000) / 100_000).toFixed(2)} us per new call`);
  }
}

clone();
states();
