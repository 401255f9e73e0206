// The Redis key layout of cluster mode, in one place so that every module (and an operator with
// redis-cli) agrees on it. Everything lives under one prefix so a shared Redis can host several
// clusters (tests use a prefix per run).
//
// | key                          | type    | what                                                      |
// |------------------------------|---------|-----------------------------------------------------------|
// | <p>nodes                     | set     | node ids that registered and may still hold streams       |
// | <p>node:<id>:alive           | string  | heartbeat, PX 5000, refreshed every 1 s; value = JSON info |
// | <p>node:<id>:streams         | hash    | streamSid -> JSON StreamEntry of the node's live streams  |
// | <p>node:<id>:lost            | string  | ISO time the node was first seen dead (set once, NX)      |
// | <p>call:<callSid>            | hash    | streamSid -> nodeId: who holds the call's streams         |
// | <p>cti-pending:<callSid>     | list    | CTI events for a call with no stream yet (TTL 1 h)        |
// | <p>alarms                    | list    | recent alarms of every node, newest first, capped at 1000 |
// | <p>lease:<name>              | string  | holder node id, PX = interval (cluster-wide periodic jobs)|
// | <p>cmd:<id>   (channel)      | pub/sub | commands forwarded to node <id>                           |
// | <p>reply:<id> (channel)      | pub/sub | answers to commands node <id> forwarded                   |
// | <p>recordings (channel)      | pub/sub | published/removed recordings, for every node's index      |
// | <p>maintenance (channel)     | pub/sub | "sweep now" from the long-call lease holder to every node    |
export const DEFAULT_PREFIX = 'gw:';

export class Keys {
  constructor(readonly prefix: string = DEFAULT_PREFIX) {}
  nodes(): string { return `${this.prefix}nodes`; }
  alive(nodeId: string): string { return `${this.prefix}node:${nodeId}:alive`; }
  streams(nodeId: string): string { return `${this.prefix}node:${nodeId}:streams`; }
  lost(nodeId: string): string { return `${this.prefix}node:${nodeId}:lost`; }
  call(callSid: string): string { return `${this.prefix}call:${callSid}`; }
  ctiPending(callSid: string): string { return `${this.prefix}cti-pending:${callSid}`; }
  alarms(): string { return `${this.prefix}alarms`; }
  lease(name: string): string { return `${this.prefix}lease:${name}`; }
  cmdChannel(nodeId: string): string { return `${this.prefix}cmd:${nodeId}`; }
  replyChannel(nodeId: string): string { return `${this.prefix}reply:${nodeId}`; }
  recordingsChannel(): string { return `${this.prefix}recordings`; }
  maintenanceChannel(): string { return `${this.prefix}maintenance`; }
}

/** What GET /v1/calls lists for one stream. */
export interface StreamEntry {
  callSid: string;
  streamSid: string;
  nodeId: string;
  paused: boolean;
  startedAt: string;
}

/** Heartbeat: 5 s TTL refreshed every second, so a dead node is noticed 5..7 s after it died. */
export const HEARTBEAT_TTL_MS = 5000;
export const HEARTBEAT_EVERY_MS = 1000;
/** A node whose streams hash was not refreshed for a day is forgotten (it is not coming back). */
export const STREAMS_TTL_MS = 24 * 3600 * 1000;
