// Cluster mode (contract section 6), assembled: a node joins when REDIS_URL is set. It wires the
// recorder's per-stream hooks to the registry, routes per-call commands, shares recordings and
// alarms, watches for dead nodes and offers leases for cluster-wide periodic jobs. Nothing here
// is on the per-frame path; nothing a stream does waits for Redis.
//
// Plugging features in (they need no cluster code of their own):
// - per-call commands: register them as POST /v1/calls/:callSid/<verb> (or POST /v1/cti/events
//   with `callSid` in the JSON body); the router forwards them to the holder, which runs the same
//   route with the `x-gateway-forwarded-by` header. Answer 404 for a call not held locally.
// - a listed field of a stream changes (pause/resume sets `session.paused`): call
//   `recorder.streamChanged(session)`; GET /v1/calls shows it cluster-wide.
// - CTI events for a call with no stream anywhere are queued here and replayed, when the stream
//   starts (or, if Redis was away then, at the node's next sync), through POST /v1/cti/events on
//   its node, in the order they happened, `at` set to when they were first received.
//   The node that received an event also ran its local route then (keep it as pending state, as
//   on a single node), so it does not get it replayed if the stream lands on it.
//   `cluster.pendingCti.push/take(scope, callSid, …)` is there for direct use.
// - pause/resume are stored in Redis by the router; a stream whose call is paused there is paused
//   when it registers (`onStoredPause`), and a pause for a call nobody holds yet is announced to
//   every node so that a stream starting later starts paused from its first frame.
// - a periodic cluster-wide job (long-call sweep): `gateway.runUnderLease('long-call-sweep',
//   config.maintenanceIntervalS * 1000, () => sweep.runOnce())` (a plain interval on one node).
import type { FastifyInstance } from 'fastify';
import type { Logger } from 'pino';
import type { Recorder } from '../../recorder/recorder.js';
import type { StreamSession } from '../../recorder/stream-session.js';
import type { Catalog } from '../../recorder/catalog/catalog.js';
import type { Alarm, Alarms } from '../../recorder/alarms.js';
import type { RecordingSidecar } from '../../recorder/sidecar.js';
import { Keys, type ScopeOf, type StreamEntry } from './keys.js';
import { RedisLink } from './redis-link.js';
import { NodeRegistry } from './node-registry.js';
import { ClusterView, type CallsSnapshot } from './cluster-view.js';
import { CommandRouter, type PauseNotice, type RoutedTarget } from './command-router.js';
import type { FastifyRequest } from 'fastify';
import { PendingCti } from './pending-cti.js';
import { SharedState } from './shared-state.js';
import { redisLease, type LeaseRunner } from './lease.js';

export interface ClusterOptions {
  redisUrl: string;
  nodeId: string;
  recordingsDir: string;
  app: FastifyInstance;
  recorder: Recorder;
  index: Catalog;
  /** reconcile this node's catalog with the volume (announcements missed while Redis was away) */
  reconcile: () => Promise<void>;
  alarms: Alarms;
  log: Logger;
  /** this process's own API key: forwarded commands and replays of queued CTI events run with it */
  internalKey: string;
  /** the account a call is keyed by (its own; '' when no data source is configured) */
  scopeOf: ScopeOf;
  /** the call a per-call command addresses (the call routes resolve it) */
  target: (req: FastifyRequest) => RoutedTarget | null;
  knowsLocally: (scope: string, callSid: string) => boolean;
  pauseEnabled: (scope: string, callSid: string) => boolean;
  /** Redis holds a pause (or, paused=false, a resume) of a call: apply it to this node's state and streams */
  onStoredPause: (scope: string, callSid: string, paused: boolean) => void;
  /** the stream's stored pause state has been applied: its held frames may go on (StreamSession.openGate) */
  onPauseStateKnown?: (streamSid: string) => void;
  /** key prefix (tests isolate runs sharing one Redis) */
  prefix?: string;
  /** how long a dead node stays listed as lost before it is forgotten (tests shorten it) */
  forgetDeadAfterMs?: number;
}

/** The stream as GET /v1/calls lists it. */
export function entryOf(session: StreamSession, nodeId: string): StreamEntry {
  return {
    accountSid: session.id.accountSid,
    callSid: session.id.callSid,
    streamSid: session.id.streamSid,
    nodeId,
    paused: session.paused,
    startedAt: session.startedAt.toISOString(),
  };
}

export class Cluster {
  readonly keys: Keys;
  readonly link: RedisLink;
  readonly registry: NodeRegistry;
  readonly view: ClusterView;
  readonly router: CommandRouter;
  readonly pendingCti: PendingCti;
  readonly shared: SharedState;
  readonly runUnderLease: LeaseRunner;
  private redisLostAlarm: NodeJS.Timeout | null = null;
  private readonly sweepListeners: (() => void)[] = [];

  constructor(private readonly o: ClusterOptions) {
    const { nodeId, log, recorder } = o;
    this.keys = new Keys(o.prefix);
    this.link = new RedisLink({ url: o.redisUrl, log });
    this.shared = new SharedState({ link: this.link, keys: this.keys, nodeId, log, index: o.index, recordingsDir: o.recordingsDir, reconcile: o.reconcile });
    this.registry = new NodeRegistry({
      link: this.link, keys: this.keys, nodeId, log, scopeOf: o.scopeOf,
      liveStreams: () => [...recorder.sessions()].map((s) => entryOf(s, nodeId)),
      onRegistered: (e, paused) => this.registered(e, paused),
      afterSync: () => this.afterSync(),
    });
    this.view = new ClusterView({
      link: this.link, keys: this.keys, nodeId, log, scopeOf: o.scopeOf, forgetDeadAfterMs: o.forgetDeadAfterMs,
      onNodeLost: (lost, streams) => o.alarms.raise('node_lost', {
        message: `node ${lost} stopped its heartbeat with ${streams.length} live stream(s); they are listed as lost until it restarts`,
        subject: `node:${lost}`,
        details: { lostNodeId: lost, streams: streams.map((s) => ({ callSid: s.callSid, streamSid: s.streamSid })) },
      }),
    });
    this.pendingCti = new PendingCti(this.link.cmd, this.keys);
    this.router = new CommandRouter({
      app: o.app, link: this.link, keys: this.keys, nodeId, log, view: this.view, pendingCti: this.pendingCti,
      target: o.target,
      holdsLocally: (scope, callSid) => recorder.streamsOfCall(callSid).some((s) => o.scopeOf(s.id.accountSid) === scope),
      knowsLocally: o.knowsLocally,
      pauseEnabled: o.pauseEnabled,
      internalKey: o.internalKey,
    });
    this.runUnderLease = redisLease(this.link.cmd, this.keys, nodeId, log, () => this.link.ready);

    recorder.onStreamStarted((s) => this.streamStarted(s));
    recorder.onStreamChanged((s) => this.registry.streamChanged(entryOf(s, nodeId)));
    recorder.onStreamEnded((s) => this.registry.streamEnded(s.id));
    o.alarms.onAlarm((a: Alarm) => this.shared.alarmRaised(a));
    this.link.onLost(() => {
      log.warn('cluster: Redis lost; not ready for new streams, live streams keep recording');
      // one alarm per outage, and only if it lasts: a Redis failover of a second is not news
      this.redisLostAlarm ??= setTimeout(() => o.alarms.raise('redis_unavailable', {
        message: 'Redis is unreachable: this node takes no new streams and cannot route commands until it returns',
      }), 3000);
    });
    this.link.onReady(() => {
      if (this.redisLostAlarm) clearTimeout(this.redisLostAlarm);
      this.redisLostAlarm = null;
      this.link.sub.subscribe(this.keys.maintenanceChannel(), this.keys.pauseChannel()).catch((err: unknown) =>
        this.o.log.warn({ err }, 'cluster: could not subscribe to maintenance and pause notices'));
    });
    this.link.sub.on('message', (channel: string, message: string) => {
      if (channel === this.keys.pauseChannel()) this.pauseNotice(message);
      if (channel !== this.keys.maintenanceChannel()) return;
      for (const fn of this.sweepListeners) fn();
    });
  }

  /** Connects and waits (up to `timeoutMs`) for the first sync; the node starts either way. */
  async start(timeoutMs = 3000): Promise<void> {
    this.shared.start();
    this.router.start();
    this.registry.start();
    this.view.start();
    this.link.connect();
    if (!(await this.registry.whenSynced(timeoutMs))) this.o.log.warn('cluster: Redis not reachable yet; starting not ready');
  }

  /** null when the node may take new streams. */
  notReadyReason(): string | null {
    if (!this.link.ready) return 'cluster mode has lost Redis: new streams must go to another node';
    if (!this.registry.healthy) return 'cluster mode: re-registering with Redis';
    return null;
  }

  private streamStarted(s: StreamSession): void {
    // registered (at once, or by the next sync when Redis is away): then `registered` below
    this.registry.streamStarted(entryOf(s, this.o.nodeId));
  }

  private pauseNotice(message: string): void {
    let n: PauseNotice;
    try {
      n = JSON.parse(message) as PauseNotice;
    } catch {
      return;
    }
    if (n.from === this.o.nodeId || typeof n.callSid !== 'string' || typeof n.scope !== 'string') return;
    this.o.onStoredPause(n.scope, n.callSid, n.paused === true);
  }

  /** A stream is in Redis: apply a stored pause, then the CTI events queued for its call. */
  private registered(e: StreamEntry, paused: boolean): void {
    const scope = this.o.scopeOf(e.accountSid);
    if (paused) this.o.onStoredPause(scope, e.callSid, true);
    this.o.onPauseStateKnown?.(e.streamSid);
    // registered first (same connection, in order), then take: see pending-cti.ts
    void this.pendingCti.take(scope, e.callSid).then(async (events) => {
      for (const p of events) {
        if (p.receivedBy === this.o.nodeId) continue; // our own route already applied it
        const replay = { ...p.event, at: p.event.at ?? p.receivedAt };
        const r = await this.router.runLocally('POST', '/v1/cti/events', replay, p.actor);
        if (r.status >= 300) this.o.log.warn({ callSid: e.callSid, status: r.status, body: r.body.slice(0, 200) }, 'cluster: queued CTI event refused');
      }
    }).catch((err: Error) => this.o.log.warn({ err, callSid: e.callSid }, 'cluster: could not take queued CTI events'));
  }

  private async afterSync(): Promise<void> {
    await this.shared.resync();
  }

  recordingPublished(s: RecordingSidecar): void {
    this.shared.recordingPublished(s);
  }

  recordingUpdated(s: RecordingSidecar): void {
    this.shared.recordingUpdated(s);
  }

  recordingRemoved(recordingId: string): void {
    this.shared.recordingRemoved(recordingId);
  }

  /** Every node runs `fn` when the lease holder of the maintenance sweep says so. */
  onSweep(fn: () => void): void {
    this.sweepListeners.push(fn);
  }

  /** Called by the lease holder once per MAINTENANCE_INTERVAL_S: every node sweeps its own streams. */
  async broadcastSweep(): Promise<void> {
    await this.link.cmd.publish(this.keys.maintenanceChannel(), this.o.nodeId);
  }

  calls(): Promise<CallsSnapshot> {
    return this.view.calls();
  }

  /** After the drain: leave the registry (no false node_lost) and close the connections. */
  async close(): Promise<void> {
    this.view.stop();
    if (this.redisLostAlarm) clearTimeout(this.redisLostAlarm);
    await this.registry.leave();
    await this.link.close();
  }
}
