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
// | <p>call:<acct>:<callSid>     | hash    | streamSid -> nodeId: who holds the call's streams (TTL 25 h) |
// | <p>cti-pending:<acct>:<callSid> | list | CTI events for a call with no stream yet (TTL 1 h)        |
// | <p>paused:<acct>:<callSid>   | string  | the call is paused (PCI): a stream starting anywhere starts paused (TTL 25 h) |
// | <p>alarms                    | list    | recent alarms of every node, newest first, capped at 1000 |
// | <p>lease:<name>              | string  | holder node id, PX = interval (cluster-wide periodic jobs)|
// | <p>cmd:<id>   (channel)      | pub/sub | commands forwarded to node <id>                           |
// | <p>reply:<id> (channel)      | pub/sub | answers to commands node <id> forwarded                   |
// | <p>recordings (channel)      | pub/sub | published/removed recordings, for every node's index      |
// | <p>maintenance (channel)     | pub/sub | "sweep now" from the long-call lease holder to every node    |
// | <p>pause (channel)           | pub/sub | a pause/resume stored for a call no node holds yet          |
//
// <acct> is the call's account: calls are keyed by account and callSid together (contract
// section 7). In the embedded default (no data source configured) it is empty: `call::CA...`.
export const DEFAULT_PREFIX = 'gw:';

/** The account a call is keyed by: its own, or '' when no data source is configured. */
export type ScopeOf = (accountSid: string) => string;

export class Keys {
  constructor(readonly prefix: string = DEFAULT_PREFIX) {}
  nodes(): string { return `${this.prefix}nodes`; }
  alive(nodeId: string): string { return `${this.prefix}node:${nodeId}:alive`; }
  streams(nodeId: string): string { return `${this.prefix}node:${nodeId}:streams`; }
  lost(nodeId: string): string { return `${this.prefix}node:${nodeId}:lost`; }
  call(account: string, callSid: string): string { return `${this.prefix}call:${account}:${callSid}`; }
  ctiPending(account: string, callSid: string): string { return `${this.prefix}cti-pending:${account}:${callSid}`; }
  paused(account: string, callSid: string): string { return `${this.prefix}paused:${account}:${callSid}`; }
  pausedPattern(): string { return `${this.prefix}paused:*`; }
  alarms(): string { return `${this.prefix}alarms`; }
  lease(name: string): string { return `${this.prefix}lease:${name}`; }
  cmdChannel(nodeId: string): string { return `${this.prefix}cmd:${nodeId}`; }
  replyChannel(nodeId: string): string { return `${this.prefix}reply:${nodeId}`; }
  recordingsChannel(): string { return `${this.prefix}recordings`; }
  maintenanceChannel(): string { return `${this.prefix}maintenance`; }
  pauseChannel(): string { return `${this.prefix}pause`; }
}

/** What GET /v1/calls lists for one stream. */
export interface StreamEntry {
  /** the stream's account (its `start.accountSid`) */
  accountSid: string;
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
/**
 * `call:` and `paused:` keys: set when a stream starts (or a pause is stored), never refreshed.
 * No stream outlives LONG_CALL_DURATION_MIN (at most 24 h: the sweep closes it), so a key that
 * is still there after 25 h belongs to nobody.
 */
export const CALL_KEY_TTL_MS = 25 * 3600 * 1000;
/** A node dead this long is forgotten: its entries leave `call:` keys, its streams leave `lost`. */
export const FORGET_DEAD_NODE_MS = 3600 * 1000;
