// Assembles one gateway node: recorder, index, metrics, the Twilio edge and the HTTP API (each
// a register* function adding its routes; the /v1 API is one plugin scope, api/v1-scope.ts, that
// owns its auth, cluster routing and error answers; the TaskRouter webhook has a scope of its own
// for its form parser), plus the node's lifecycle (idle sweep, drain). main.ts only adds process
// concerns (config from the environment, signals, exit codes).
import Fastify, { type FastifyBaseLogger, type FastifyInstance } from 'fastify';
import websocket from '@fastify/websocket';
import pino, { type Logger } from 'pino';
import { mkdir } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import type { GatewayConfig } from './config-types.js';
import type { SourceSettings } from '../recorder/source-settings.js';
import { Recorder } from '../recorder/recorder.js';
import type { Catalog } from '../recorder/catalog/catalog.js';
import { openCatalog, type CatalogSettings } from '../recorder/catalog/open-catalog.js';
import { CatalogSync } from '../recorder/catalog/catalog-sync.js';
import { registerCatalogMetrics } from '../recorder/catalog/catalog-metrics.js';
import { Retention } from '../recorder/retention.js';
import { IN_PROGRESS_DIR } from '../recorder/storage-layout.js';
import { createMetrics, type GatewayMetrics } from './metrics.js';
import { registerTwilioRoute } from './twilio/twilio-route.js';
import { registerHealthRoutes } from './health-routes.js';
import { installErrorHandling, frameworkErrors, clientErrorHandler, ApiError } from './api/errors.js';
import { registerV1Scope, type ApiInstance } from './api/v1-scope.js';
import { registerRecordingRoutes } from './api/recordings-routes.js';
import { registerAlarmRoutes } from './api/alarms-routes.js';
import { Alarms, ALARMS_PER_KIND } from '../recorder/alarms.js';
import type { TwilioStreamHandler } from './twilio/twilio-stream.js';
import { CallStates } from '../recorder/call-states.js';
import { CallControl } from '../recorder/call-control.js';
import { Maintenance } from '../recorder/maintenance.js';
import { registerCallControlRoutes } from './api/call-control-routes.js';
import { registerCallListRoutes } from './api/call-list-routes.js';
import { registerTaskRouterRoute } from './api/taskrouter-routes.js';
import { WebhookOutbox } from '../recorder/webhook-outbox.js';
import type { RecordingSidecar } from '../recorder/sidecar.js';
import { Cluster, entryOf } from './cluster/cluster.js';
import { isKnownInCluster } from './cluster/command-router.js';
import { callTargetOf } from './api/call-control-routes.js';
import { INTERNAL_ACTOR_HEADER } from './api/api-auth.js';
import { localLease, type LeaseRunner } from './cluster/lease.js';
import { Archiver } from '../recorder/archive/archiver.js';
import { registerArchiveMetrics } from '../recorder/archive/archive-metrics.js';
import { cannotEncode } from '../recorder/archive/ffmpeg.js';
import { backgroundLaunch } from '../recorder/background-launch.js';
import { isArchiveFormat } from '../recorder/archive/formats.js';
import { ConfigError } from './config.js';
import type { KinesisConsumer, KinesisOptions } from './kinesis/kinesis-consumer.js';
import type { CtiEvent } from '../recorder/call-states.js';
import { applyCtiEvent, applyCtiEventInBatch } from './api/call-control-routes.js';
import { FdBudget } from './fd-budget.js';
import type { StreamSession } from '../recorder/stream-session.js';

/** CTI state of a call is forgotten this long after its last event (and never while it streams). */
const CALL_STATE_TTL_MS = 6 * 60 * 60 * 1000;
import { recoverPartials, type RecoveryResult } from '../recorder/recovery.js';
import { journalDirOf } from '../recorder/journal.js';
import { Deletions } from '../recorder/deletions.js';
import { KeptMarks } from '../recorder/kept-marks.js';

/** Largest WebSocket message accepted (a Twilio media message is ~300 bytes). */
export const MAX_MESSAGE_BYTES = 64 * 1024;

export interface GatewayOptions {
  logger?: Logger;
  /** jitter window and emission chunk, ms (tests shorten nothing else) */
  windowMs?: number;
  chunkMs?: number;
  now?: () => number;
  wallNow?: () => Date;
  /** first webhook retry delay (doubles per failure); default 1 s */
  webhookBaseDelayMs?: number;
  webhookMaxDelayMs?: number;
  /** Redis key prefix in cluster mode (tests isolate runs) */
  redisPrefix?: string;
  /** cap on the calls whose CTI state the node remembers (default MAX_CALL_STATES) */
  maxCallStates?: number;
  /** cluster mode: how long a dead node stays listed as lost before it is forgotten */
  forgetDeadAfterMs?: number;
  /** Kinesis consumer timings (tests shorten them) and a benchmark hook */
  kinesis?: KinesisOptions;
}

export interface Gateway {
  app: FastifyInstance;
  config: GatewayConfig;
  alarms: Alarms;
  recorder: Recorder;
  /** the recording catalog (SQLite, or PostgreSQL with DATABASE_URL) */
  index: Catalog;
  /** background import / reconcile of the catalog with RECORDINGS_DIR */
  catalogSync: CatalogSync;
  control: CallControl;
  /** CTI state per call (account + callSid) */
  states: CallStates;
  maintenance: Maintenance;
  /** null when RECORDING_WEBHOOK_URL is unset */
  outbox: WebhookOutbox | null;
  /** the compressed-archive pool; null when no source has an ARCHIVE_FORMAT */
  archiver: Archiver | null;
  metrics: GatewayMetrics;
  log: Logger;
  handlers: Set<TwilioStreamHandler>;
  /** cluster mode (REDIS_URL set), else null */
  cluster: Cluster | null;
  /** run `fn` every `intervalMs` once in the whole cluster (single node: on this node) */
  runUnderLease: LeaseRunner;
  /** crash recovery of partials left by a previous process; /readyz is 503 until it settles */
  recovery: Promise<RecoveryResult>;
  /** agent events from Kinesis; null when no data source has a stream */
  kinesis: KinesisConsumer | null;
  /** listen on config.host:config.port; resolves with the bound port */
  listen(): Promise<number>;
  /** stop taking streams, let live ones run up to DRAIN_TIMEOUT_S, finalise the rest, close */
  drain(): Promise<void>;
  /** close at once, finalising live streams as `shutdown` */
  close(): Promise<void>;
  /**
   * Adds routes (paths relative to /v1) and hooks to the /v1 scope, after the gateway's own: they
   * get its auth, cluster routing and error answers. Before listen only (tools' probe commands).
   */
  addV1Routes(routes: (v1: ApiInstance) => void): void;
}

export function settingsResolver(config: GatewayConfig): (accountSid: string) => SourceSettings {
  const bySid = new Map(config.sources.map((s) => [s.accountSid, s] as const));
  return (sid) => bySid.get(sid) ?? config.defaults;
}

export async function buildGateway(config: GatewayConfig, opts: GatewayOptions = {}): Promise<Gateway> {
  // files born from now on are this gateway's own streams' (recovery leaves them alone)
  const builtAt = Date.now();
  // A configured archive format this ffmpeg cannot make stops start-up like any bad setting.
  const archiveFormats = new Set([config.defaults, ...config.sources].map((s) => s.archiveFormat).filter(isArchiveFormat));
  for (const f of archiveFormats) {
    const why = cannotEncode(f);
    if (why !== null) {
      throw new ConfigError('ARCHIVE_FORMAT', f, 'a format the installed ffmpeg can encode', `ARCHIVE_FORMAT=${JSON.stringify(f)} cannot be used: ${why}`);
    }
  }
  const log = opts.logger ?? pino({
    level: config.logLevel,
    base: { nodeId: config.nodeId },
    redact: ['req.headers.authorization', 'req.headers["x-twilio-signature"]'],
  });
  await mkdir(path.join(config.recordingsDir, IN_PROGRESS_DIR), { recursive: true });

  let recorder: Recorder | null = null;
  let archiver: Archiver | null = null;
  /** streams whose disk_backpressure drop already raised its alarm (one per stream) */
  const backpressureAlarmed = new WeakSet<StreamSession>();
  let cluster: Cluster | null = null;
  // recordings published before the cluster exists (start-up recovery) are announced once it does
  const publishedEarly: RecordingSidecar[] = [];
  const announcePublished = (s: RecordingSidecar) => {
    if (cluster) cluster.recordingPublished(s);
    else if (config.redisUrl !== null) publishedEarly.push(s);
  };
  const wallNow = opts.wallNow ?? (() => new Date());
  const alarms = new Alarms(log, config.nodeId, ALARMS_PER_KIND, wallNow);
  const metrics = createMetrics(() => recorder, () => alarms);
  registerArchiveMetrics(metrics.registry, () => archiver);
  // Opening runs the schema migrations; the sidecars are imported in the background (below), so
  // start-up does not grow with the number of recordings.
  const catalogSettings: CatalogSettings = {
    recordingsDir: config.recordingsDir,
    databaseUrl: config.databaseUrl,
    clusterNodeId: config.redisUrl !== null && config.databaseUrl === null ? config.nodeId : null,
  };
  const index = await openCatalog(catalogSettings).catch((err: Error) => {
    throw new Error(`the recording catalog could not be opened (${config.databaseUrl === null ? 'SQLite under RECORDINGS_DIR' : 'DATABASE_URL'}): ${err.message}`);
  });
  log.info({ backend: index.backend, dir: config.recordingsDir }, 'recording catalog open');
  // rule deletions a previous run could not finish: never listed again, retried below
  const deletions: Deletions = new Deletions({
    recordingsDir: config.recordingsDir,
    nodeId: config.nodeId,
    onlyOwn: config.redisUrl !== null,
    raise: (kind, input) => alarms.raise(kind, input),
    onDeleted: (rec) => control.outcomes.onDeleted(rec.sidecar, rec.reason),
    log: log.child({ component: 'deletions' }),
    wallNow,
  });
  for (const id of await deletions.pendingIds()) await index.remove(id);
  const catalogSync = new CatalogSync({
    catalog: index, settings: catalogSettings, pendingDeletions: () => deletions.pendingIds(),
    log: log.child({ component: 'catalog' }),
  });
  await catalogSync.init();
  registerCatalogMetrics(metrics.registry, index, catalogSync);
  // a first start on an existing RECORDINGS_DIR imports every sidecar: /readyz says how far it is
  void catalogSync.reconcile();

  const settingsFor = settingsResolver(config);
  const outbox = config.recordingWebhookUrl === null ? null : new WebhookOutbox({
    recordingsDir: config.recordingsDir,
    nodeId: config.nodeId,
    url: config.recordingWebhookUrl,
    secret: config.recordingWebhookSecret as string,
    log: log.child({ component: 'webhook' }),
    baseDelayMs: opts.webhookBaseDelayMs,
    maxDelayMs: opts.webhookMaxDelayMs,
    onFailing: (eventId, attempts, lastError) => alarms.raise('webhook_failing', {
      message: `recording webhook ${eventId} not acknowledged after ${attempts} attempts (${lastError}); still retrying`,
      details: { eventId, attempts },
    }),
  });
  if (outbox) {
    const left = await outbox.start();
    if (left > 0) log.info({ events: left }, 'recording webhooks left from the last run: resending');
  }
  const states = new CallStates(CALL_STATE_TTL_MS, wallNow, opts.maxCallStates);
  // this process's own API key: in-process requests (replays, TaskRouter dispatch, commands
  // forwarded by another node, which checked the caller) pass the API auth with it; never sent out
  const internalKey = randomBytes(32).toString('hex');
  const sourceSids = config.sources.map((s) => s.accountSid);
  const control: CallControl = new CallControl({
    recorder: (): Recorder => rec,
    index,
    states,
    alarms,
    recordingsDir: config.recordingsDir,
    deletions,
    kept: new KeptMarks(config.recordingsDir),
    settingsFor,
    scoped: config.sources.length > 0,
    wallNow,
    onError: (what, err) => log.error({ err }, `failed ${what}`),
    // contract section 7: one structured line per deletion, with who caused it (never a key)
    audit: (entry) => log.info({ audit: true, ...entry }, `recording ${entry.recordingId} deleted (${entry.reason}, by ${entry.actor})`),
    // eventId = <recordingId>.<event>: the same outcome of a recording is one id, whatever retries
    onIndexed: announcePublished,
    onUpdated: (s) => cluster?.recordingUpdated(s),
    onRemoved: (id) => cluster?.recordingRemoved(id),
    announce: outbox === null ? undefined : (event, body) =>
      outbox.enqueue(`${String(body.recordingId)}.${event}`, { event, ...body }),
  });

  if (archiveFormats.size > 0) {
    archiver = new Archiver({
      recordingsDir: config.recordingsDir,
      nodeId: config.nodeId,
      concurrency: config.archiveConcurrency,
      keepWav: config.archiveKeepWav,
      formatFor: (s) => settingsFor(s.accountSid).archiveFormat,
      lookup: (id) => index.get(id),
      untilIndexed: () => catalogSync.idle(),
      rewriteSidecar: (id, change) => control.outcomes.rewriteSidecar(id, change),
      onArchived: outbox === null ? undefined : (s) => outbox.enqueue(`${s.recordingId}.archived`, { event: 'archived', ...s }),
      onFailed: (recordingId, err) => alarms.raise('archive_failed', {
        message: `the compressed archive of ${recordingId} could not be made: ${err.message}; the WAV is kept, the next start tries again`,
        recordingId,
      }),
      log: log.child({ component: 'archive' }),
      wallNow,
    });
    // the launch probes (chrt, taskset) run now, at start-up, not at the first job
    const how = backgroundLaunch();
    log.info({ schedIdle: how.schedIdle, cpus: how.cpus ?? 'inherited' }, 'archive ffmpeg: SCHED_IDLE and nice 19, playback nice 10');
    const left = await archiver.start();
    if (left > 0) log.info({ jobs: left }, 'archive jobs left from the last run: finishing them');
  }
  const pool = archiver;
  // After a recording is published and kept (or deleted by a rule): its archive is queued.
  const published = async (s: RecordingSidecar, all: readonly RecordingSidecar[]): Promise<void> => {
    await control.onRecording(s, all);
    await pool?.published(s).catch((err: Error) => log.error({ err, recordingId: s.recordingId }, 'could not queue the archive job'));
  };

  recorder = new Recorder({
    recordingsDir: config.recordingsDir,
    nodeId: config.nodeId,
    settingsFor,
    idleTimeoutMs: config.streamIdleTimeoutS * 1000,
    windowMs: opts.windowMs,
    chunkMs: opts.chunkMs,
    now: opts.now,
    wallNow: opts.wallNow,
    onWritten: (_bytes, lagMs) => metrics.observeWriteLag(lagMs),
    journalDir: journalDirOf(config.recordingsDir, config.nodeId),
    onJournalError: (err) => alarms.raise((err as NodeJS.ErrnoException).code === 'ENOSPC' ? 'disk_full' : 'disk_write_failed', {
      message: `the media journal could not be written: ${err.message}; it stopped and gave its space back to the recordings, which go on, but until a restart a crash may lose up to the last 1.5 s of each call`,
    }),
    onRecording: published,
    outcomeWaitsForEnd: (s) => control.outcomeWaitsForEnd(s),
    isRecordingIdTaken: async (id) => (await index.get(id)) !== undefined,
    onReserveError: (streamSid, err) => log.error({ streamSid, err }, 'could not reserve the stream\'s recordingId on the volume; recording under a random unique one'),
    onSegmentError: (recordingId, err, id) => {
      alarms.raise('segment_publish_failed', {
        message: `segment ${recordingId} could not be published: ${err.message}`, recordingId,
        accountSid: id.accountSid, callSid: id.callSid, streamSid: id.streamSid,
      });
      void control.outcomes.onSegmentError(recordingId, err, id);
    },
    onStart: (session) => control.onStart(session),
    isCallPaused: (callSid, accountSid) => control.isPaused(accountSid, callSid),
    // cluster mode: a pause stored by another node must hold from a new stream's first frame
    gatePauseState: config.redisUrl !== null,
    maxQueueBytes: config.writeQueueMaxBytes,
    onBackpressureDrop: (session) => {
      if (backpressureAlarmed.has(session)) return;
      backpressureAlarmed.add(session);
      alarms.raise('audio_dropped', {
        message: `the disk fell behind by more than WRITE_QUEUE_MAX_KB for stream ${session.id.streamSid}: audio dropped (written as silence, counted as disk_backpressure)`,
        callSid: session.id.callSid, streamSid: session.id.streamSid, details: { reason: 'disk_backpressure' },
      });
    },
    // The stream keeps running (its socket stays open, nothing else is touched); the audio
    // written before the error is published with `writeError` in its sidecar.
    onWriteError: (session, recordingId, err) => alarms.raise(err.code === 'ENOSPC' ? 'disk_full' : 'disk_write_failed', {
      message: `${err.code === 'ENOSPC' ? 'disk full' : 'disk write failed'} for ${recordingId}: ${err.message}; audio after this point is not kept`,
      recordingId, accountSid: session.id.accountSid, callSid: session.id.callSid, streamSid: session.id.streamSid, details: { code: err.code ?? null },
    }),
    // The pause holds (paused audio is dropped either way); only a crash before the next good
    // write would recover the stream's pauses as of its last checkpoint.
    onPauseRecordError: (session, err) => {
      const code = (err as NodeJS.ErrnoException).code;
      alarms.raise(code === 'ENOSPC' ? 'disk_full' : 'disk_write_failed', {
        message: `the pause record of stream ${session.id.streamSid} could not be written: ${err.message}; the pause holds, but a crash before the next write would recover its pauses only as of the last checkpoint`,
        accountSid: session.id.accountSid, callSid: session.id.callSid, streamSid: session.id.streamSid, details: { code: code ?? null, what: 'pause_record' },
      });
    },
  });
  const rec: Recorder = recorder;

  // Recover what a previous process left in .inprogress. It runs while the node already answers
  // /healthz (a long recovery must not look like a dead process), but /readyz stays 503 until
  // every partial is a published recording, so no load balancer sends streams before that.
  let recovering = true;
  void deletions.resume();
  const recovery = recoverPartials({
    recordingsDir: config.recordingsDir,
    nodeId: config.nodeId,
    journal: { dir: journalDirOf(config.recordingsDir, config.nodeId), ownToken: rec.journal?.fileToken },
    onlyOwn: config.redisUrl !== null,
    // streams are taken while recovery runs: their files are born after this gateway was built
    ownSince: builtAt,
    raise: (kind, input) => alarms.raise(kind, input),
    // the same path as any finished recording: rules, index, cluster announcement, webhooks
    onRecovered: (s) => published(s, [s]),
    log,
  }).then((r) => {
    if (r.recovered + r.unattributed + r.failed > 0) log.info(r, 'crash recovery finished');
    return r;
  }, (err: Error) => {
    alarms.raise('recovery_failed', { message: `crash recovery failed: ${err.message}` });
    return { recovered: 0, unattributed: 0, failed: 1 };
  }).finally(() => { recovering = false; });

  let draining = false;
  const handlers = new Set<TwilioStreamHandler>();
  const app: FastifyInstance = Fastify({
    // eslint-disable-next-line @typescript-eslint/no-unnecessary-type-assertion -- it fixes Fastify's logger type parameter (pino's Logger would not fit FastifyInstance)
    loggerInstance: log.child({ component: 'http' }) as FastifyBaseLogger,
    bodyLimit: 1024 * 1024,
    frameworkErrors,
    clientErrorHandler,
    // The drain already ended every stream; a client holding a keep-alive API connection (e.g.
    // after a streamed download) must not keep the process from exiting.
    forceCloseConnections: true,
    // CTI session ids in paths may be longer than fastify's default of 100
    routerOptions: { maxParamLength: 300 },
    // Node would refuse an HTTP/1.1 request without Host itself, with an empty 400; the error
    // handling hook refuses it in the API's error shape instead (gateway/api/errors.ts)
    http: { requireHostHeader: false },
  });
  await app.register(websocket, {
    options: { maxPayload: MAX_MESSAGE_BYTES },
    // A peer's protocol error (a frame over maxPayload, invalid UTF-8, a bad opcode: ws codes
    // WS_ERR_*) is the client's fault: ws already sends the close frame with its code (1009,
    // 1007, ...) and the stream's own listener counts and logs it. The plugin's default handler
    // would log it as a server error and terminate the socket before that close frame goes out.
    errorHandler: (err, socket, req) => {
      if ((err as Error & { code?: string }).code?.startsWith('WS_ERR_')) return;
      req.log.error({ err }, 'WebSocket error');
      socket.terminate();
    },
  });
  const sockets = { open: 0 };
  const fdBudget = FdBudget.forThisProcess(() => sockets.open);
  if (fdBudget !== null) {
    await fdBudget.refresh();
    const fits = fdBudget.capacity();
    if (fits < config.maxStreams) {
      log.warn({ openFilesLimit: fdBudget.limit, streams: fits, maxStreams: config.maxStreams },
        `the open-file limit (ulimit -n ${fdBudget.limit}) carries about ${fits} streams, fewer than MAX_STREAMS=${config.maxStreams}; upgrades beyond are refused (503)`);
    }
  }
  // A connection that sends no request holds a descriptor for nothing: Node's headersTimeout
  // starts only with the first byte, so an idle socket gets START_TIMEOUT_S of inactivity (Node's
  // own timeout handler destroys it). The first request hands the socket back to Node's
  // timeouts (keep-alive) and a WebSocket upgrade to ws, which clears it.
  const firstRequestTimeoutMs = config.startTimeoutS * 1000;
  app.server.on('connection', (socket: import('node:net').Socket) => socket.setTimeout(firstRequestTimeoutMs));
  app.server.on('request', (req: import('node:http').IncomingMessage) => req.socket.setTimeout(app.server.timeout));
  installErrorHandling(app);
  if (config.redisUrl !== null) {
    cluster = new Cluster({
      redisUrl: config.redisUrl, nodeId: config.nodeId, recordingsDir: config.recordingsDir,
      app, recorder: rec, index, alarms, log: log.child({ component: 'cluster' }),
      reconcile: () => catalogSync.reconcile(),
      internalKey, prefix: opts.redisPrefix, forgetDeadAfterMs: opts.forgetDeadAfterMs,
      scopeOf: (accountSid) => control.scopeOf(accountSid),
      target: (req) => callTargetOf(control, sourceSids, req),
      knowsLocally: (scope, callSid) => control.knows(scope, callSid),
      pauseEnabled: (scope, callSid) => control.pauseEnabled(scope, callSid),
      onStoredPause: (scope, callSid, paused) => control.applyStoredPause(scope, callSid, paused),
      onPauseStateKnown: (streamSid) => rec.get(streamSid)?.openGate(),
    });
    for (const s of publishedEarly.splice(0)) cluster.recordingPublished(s);
  }
  const clusterNode = cluster;
  registerHealthRoutes(app, {
    metrics,
    notReadyReason: () => (draining ? 'draining: this node is shutting down'
      : recovering ? 'recovering: finalising recordings left by the previous process'
        : catalogSync.notReadyReason() ?? clusterNode?.notReadyReason() ?? null),
  });
  registerTwilioRoute(app, {
    config, recorder: rec, metrics, log, isDraining: () => draining, handlers, alarms, sockets, fdBudget,
    onLeadRefused: metrics.leadRefused, now: opts.now,
  });
  // /v1: one scope owns the API keys, the cluster's routing of per-call commands and the error answers
  const extraV1Routes: ((v1: ApiInstance) => void)[] = [];
  let v1Loaded = false;
  registerV1Scope(app, {
    auth: { apiKeys: config.apiKeys, sourceKeys: config.sources, internalKey },
    routeCommand: clusterNode?.router.preHandler,
  }, (v1) => {
    registerRecordingRoutes(v1, { index });
    registerAlarmRoutes(v1, { alarms, clusterAlarms: clusterNode ? () => clusterNode.shared.alarms() : undefined });
    registerCallListRoutes(v1, {
      calls: clusterNode
        ? () => clusterNode.calls()
        : async () => ({ items: [...rec.sessions()].map((s) => entryOf(s, config.nodeId)), lost: [] }),
    });
    registerCallControlRoutes(v1, { control, sources: sourceSids, knownInCluster: clusterNode ? isKnownInCluster : undefined });
    for (const routes of extraV1Routes) routes(v1);
    v1Loaded = true;
  });
  // cluster mode: through the CTI route, which the command router forwards to the call's owner;
  // `actor` names the sender in the audit line of a deletion it causes
  const clusterDispatch = clusterNode ? async (ev: CtiEvent, actor = `kinesis:${ev.accountSid ?? ''}`) => {
    const r = await app.inject({
      method: 'POST', url: '/v1/cti/events', payload: ev,
      headers: { authorization: `Bearer ${internalKey}`, [INTERNAL_ACTOR_HEADER]: actor },
    });
    if (r.statusCode >= 300) {
      const body = r.json<{ error?: string; message?: string }>();
      throw new ApiError(r.statusCode, body.error ?? 'cti_event_failed', body.message ?? `CTI event refused (${r.statusCode})`);
    }
  } : undefined;
  registerTaskRouterRoute(app, { config, control, dispatch: clusterDispatch });

  const retention = new Retention({
    catalog: index,
    deleteRecording: (s) => control.outcomes.deleteForRetention(s),
    pendingDeletions: () => deletions.pendingIds(),
    defaults: config.defaults, sources: config.sources, wallNow,
    log: log.child({ component: 'retention' }),
  });
  const maintenance = new Maintenance({ recorder: rec, control, states, alarms, settingsFor, wallNow, retention });
  const runUnderLease: LeaseRunner = clusterNode ? clusterNode.runUnderLease : localLease(log);
  // Once per interval in the whole cluster: the lease holder asks every node to sweep its own
  // streams (each stream lives on exactly one node, so each call is swept exactly once).
  const stopSweep = clusterNode
    ? runUnderLease('long-call-sweep', config.maintenanceIntervalS * 1000, async () => {
      await clusterNode.broadcastSweep();
      await maintenance.runRetention();
    })
    : runUnderLease('long-call-sweep', config.maintenanceIntervalS * 1000, async () => {
      maintenance.runOnce();
      await maintenance.runRetention();
    });
  clusterNode?.onSweep(() => maintenance.runOnce());
  if (clusterNode) await clusterNode.start();

  // Agent events from Kinesis (contract section 9): the same CTI entry point as the API, with
  // the source's account set. The SDK is loaded only when a source has a stream.
  const kinesis: KinesisConsumer | null = !config.sources.some((s) => s.kinesis) ? null
    : (await import('./kinesis/kinesis-consumer.js')).startKinesis({
      sources: config.sources, nodeId: config.nodeId, recordingsDir: config.recordingsDir,
      log, registry: metrics.registry,
      dispatch: clusterDispatch ?? (async (ev) => { await applyCtiEvent(control, ev, `kinesis:${ev.accountSid ?? ''}`); }),
      batch: clusterDispatch ? undefined : () => {
        const b = control.newBatch();
        return {
          dispatch: (ev) => applyCtiEventInBatch(control, ev, `kinesis:${ev.accountSid ?? ''}`, b),
          finish: () => control.finishBatch(b),
        };
      },
      // one alarm entry per source and stream (entries are keyed by account and subject)
      raiseUnreadable: (message, details) => alarms.raise('kinesis_unreadable', {
        message, details, accountSid: details.accountSid as string, subject: `kinesis:${String(details.stream)}`,
      }),
      redis: clusterNode && config.redisUrl !== null ? { url: config.redisUrl, prefix: clusterNode.keys.prefix } : null,
    }, opts.kinesis);

  // One sweep for the whole node instead of a timer per stream.
  const sweepMs = Math.min(1000, (config.streamIdleTimeoutS * 1000) / 4);
  const sweeper = setInterval(() => rec.sweepIdle(), sweepMs);
  sweeper.unref();

  let closed: Promise<void> | null = null;
  const shutdown = async (graceMs: number): Promise<void> => {
    draining = true;
    const deadline = performance.now() + graceMs;
    while (rec.activeStreams > 0 && performance.now() < deadline) {
      await new Promise((r) => setTimeout(r, Math.min(100, Math.max(1, deadline - performance.now()))));
    }
    const left = rec.activeStreams;
    if (left > 0) log.info({ streams: left }, 'drain timeout: finalising live streams');
    await rec.endAll('shutdown');
    clearInterval(sweeper);
    stopSweep();
    await kinesis?.stop(); // before app.close: in cluster mode its events go through app.inject
    await app.close();
    await rec.settled();
    await rec.closeJournal();
    await pool?.stop();
    await outbox?.stop();
    await recovery;
    await deletions.stop();
    await clusterNode?.close();
    await catalogSync.stop();
    await index.close();
  };

  return {
    app, config, alarms, recorder: rec, index, catalogSync, control, states, maintenance, outbox, archiver: pool, metrics, log, handlers,
    cluster: clusterNode,
    runUnderLease,
    recovery,
    kinesis,
    async listen() {
      await app.listen({ port: config.port, host: config.host });
      const addr = app.server.address();
      return typeof addr === 'object' && addr !== null ? addr.port : config.port;
    },
    drain() {
      return (closed ??= shutdown(config.drainTimeoutS * 1000));
    },
    close() {
      return (closed ??= shutdown(0));
    },
    addV1Routes(routes) {
      // the scope's plugin runs once, when the app gets ready (listen, inject)
      if (v1Loaded) throw new Error('addV1Routes: the /v1 scope is already loaded; add routes before listen');
      extraV1Routes.push(routes);
    },
  };
}
