// Per-call commands reach the node holding the call. A preHandler hook on the /v1 scope
// (`preHandler`, installed by v1-scope.ts) looks at every routed request there
// (POST /v1/calls/:callSid/<anything>, POST /v1/cti/events); when the call is held by
// another node it sends the request over Redis pub/sub (`cmd:<owner>`, correlation id, answer
// on `reply:<sender>`), and the owner runs the SAME route locally through app.inject with the
// forwarded header, so pause/resume/CTI routes need no cluster code of their own. A request
// carrying the header is never forwarded again. When the owner cannot be reached the answer is
// 503 with the reason, never a 200 that did not happen.
//
// Calls are addressed by account and callSid (`target`, resolved by the call routes from the
// caller's key and the request). The sender has checked the caller's key; a forwarded command
// carries the caller's scope and actor, and the owner runs it with its own in-process key (Redis
// is the cluster's trust boundary: whoever can publish there controls the cluster anyway).
//
// Pause and resume (PCI) are stored in Redis (`paused:<acct>:<callSid>`) in the same Lua script
// that reads the call's holders: a stream registering at the same moment either sees the pause or
// is seen as a holder and gets the command. With no holder anywhere, the pause is kept for the
// stream to come (announced on the `pause` channel, read again at each stream's registration).
import { randomUUID } from 'node:crypto';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { Logger } from 'pino';
import { ApiError } from '../api/errors.js';
import type { Keys } from './keys.js';
import type { RedisLink } from './redis-link.js';
import type { ClusterView } from './cluster-view.js';
import type { PendingCti } from './pending-cti.js';
import { INTERNAL_ACTOR_HEADER, INTERNAL_SCOPE_HEADER, accessOf } from '../api/api-auth.js';
import { CALL_KEY_TTL_MS } from './keys.js';
import { isObject } from '../untyped.js';

export const FORWARDED_HEADER = 'x-gateway-forwarded-by';
/**
 * How long a forwarded command waits for the owner's answer. Delivery takes milliseconds; the
 * wait covers an owner whose loop is busy (GC, a burst of publications). A 503 here says "may
 * have been applied", which is worse for the caller than a slower 200, so it is generous.
 */
export const FORWARD_TIMEOUT_MS = 3000;
/** headers that travel with a forwarded command (the caller's key does not: see above) */
const PASSED_HEADERS = ['content-type', 'accept'];

interface CommandMessage {
  id: string;
  from: string;
  method: string;
  url: string;
  headers: Record<string, string>;
  payload?: string;
  /** the caller's account restriction (null: every account) and who it was, for the owner */
  scope: string | null;
  actor: string;
}

export interface CommandReply {
  id: string;
  status: number;
  contentType: string;
  body: string;
}

/** A per-call command: the call (account scope + callSid) it addresses. */
export interface RoutedTarget {
  scope: string;
  callSid: string;
}

type Kind = 'cti' | 'pause' | 'resume' | 'command';

function kindOf(req: FastifyRequest): Kind {
  const url = req.routeOptions.url ?? '';
  if (url === '/v1/cti/events') return 'cti';
  if (url === '/v1/calls/:callSid/pause') return 'pause';
  if (url === '/v1/calls/:callSid/resume') return 'resume';
  return 'command';
}

/**
 * Store or clear the pause of a call and read its holders, atomically.
 * KEYS: call, paused, cti-pending. ARGV: '1' pause / '0' resume, TTL ms, '1' if the receiving
 * node knows the call. Returns { known (0/1), holders, paused before (0/1) }.
 */
const SET_PAUSE = `
local holders = redis.call('HVALS', KEYS[1])
local was = redis.call('EXISTS', KEYS[2])
local known = #holders > 0 or ARGV[3] == '1' or was == 1 or redis.call('EXISTS', KEYS[3]) == 1
if ARGV[1] == '1' then
  if known then redis.call('SET', KEYS[2], '1', 'PX', ARGV[2]) end
else
  redis.call('DEL', KEYS[2])
end
if known then return {1, holders, was} end
return {0, holders, was}
`;

export interface PauseNotice {
  from: string;
  scope: string;
  callSid: string;
  paused: boolean;
}

export interface CommandRouterOptions {
  /** the root instance: a forwarded command (or a replay) runs through its inject */
  app: FastifyInstance;
  link: RedisLink;
  keys: Keys;
  nodeId: string;
  log: Logger;
  view: ClusterView;
  pendingCti: PendingCti;
  /** the call a per-call command addresses (throws an ApiError when it cannot be told), or null */
  target: (req: FastifyRequest) => RoutedTarget | null;
  /** does this node hold a live stream of the call? */
  holdsLocally: (scope: string, callSid: string) => boolean;
  /** does this node know the call at all (stream or CTI state)? */
  knowsLocally: (scope: string, callSid: string) => boolean;
  /** is pause/resume enabled for the call's data source? (the local route answers 409 if not) */
  pauseEnabled: (scope: string, callSid: string) => boolean;
  /** this process's own API key (never sent anywhere): forwarded commands and replays run with it */
  internalKey: string;
}

const knownInCluster = new WeakMap<object, boolean>();

/** The router found this pause/resume's call in Redis (no holder yet): the local route accepts it. */
export function isKnownInCluster(req: FastifyRequest): boolean {
  return knownInCluster.get(req.raw) === true;
}

export class CommandRouter {
  private readonly waiting = new Map<string, (r: CommandReply) => void>();
  /** commands run locally until start(): nothing listens for answers before */
  private started = false;

  constructor(private readonly o: CommandRouterOptions) {}

  /** The /v1 scope's preHandler: forwards the request (returns the sent reply) or lets the local route run. */
  readonly preHandler = async (req: FastifyRequest, reply: FastifyReply): Promise<FastifyReply | undefined> =>
    (this.started ? this.route(req, reply) : undefined);

  start(): void {
    const { link, keys, nodeId } = this.o;
    link.onReady(() => {
      link.sub.subscribe(keys.cmdChannel(nodeId), keys.replyChannel(nodeId)).catch((err: Error) =>
        this.o.log.warn({ err }, 'cluster: subscribe failed'));
    });
    link.sub.on('message', (channel: string, message: string) => {
      if (channel === keys.cmdChannel(nodeId)) void this.execute(message);
      else if (channel === keys.replyChannel(nodeId)) this.answered(message);
    });
    this.started = true;
  }

  private async route(req: FastifyRequest, reply: FastifyReply): Promise<FastifyReply | undefined> {
    if (req.headers[FORWARDED_HEADER] !== undefined && this.fromInside(req)) return;
    if (req.method !== 'POST') return;
    const routed = this.o.target(req);
    if (routed === null) return;
    const { scope, callSid } = routed;
    const kind = kindOf(req);
    const local = this.o.holdsLocally(scope, callSid);
    if (!this.o.link.ready) {
      // Without Redis we cannot know the other holders; a call held here still gets its command.
      if (local) return;
      throw new ApiError(503, 'cluster_unavailable', `cannot reach Redis to find the node holding call ${callSid}; the command was not applied, retry shortly`);
    }
    if ((kind === 'pause' || kind === 'resume') && !this.o.pauseEnabled(scope, callSid)) return; // the route answers 409
    let holders: string[];
    /** a resume cleared a stored pause: put back if the resume is answered "not applied" */
    let unpaused = false;
    try {
      if (kind === 'cti') {
        holders = await this.o.pendingCti.pushUnlessOwned(scope, callSid, {
          event: { ...(isObject(req.body) ? req.body : {}), ...(scope === '' ? {} : { accountSid: scope }) },
          receivedBy: this.o.nodeId,
          receivedAt: new Date().toISOString(),
          actor: accessOf(req).actor,
        });
      } else if (kind === 'pause' || kind === 'resume') {
        const k = this.o.keys;
        const [known, list, was] = await this.o.link.cmd.eval(SET_PAUSE, 3, k.call(scope, callSid), k.paused(scope, callSid), k.ctiPending(scope, callSid),
          kind === 'pause' ? '1' : '0', String(CALL_KEY_TTL_MS), this.o.knowsLocally(scope, callSid) ? '1' : '0') as [number, string[], number];
        holders = list;
        unpaused = kind === 'resume' && was === 1;
        if (holders.length === 0 && known === 1) {
          // no stream anywhere yet: remember it here (the route answers 200) and tell every node
          knownInCluster.set(req.raw, true);
          const notice: PauseNotice = { from: this.o.nodeId, scope, callSid, paused: kind === 'pause' };
          await this.o.link.cmd.publish(k.pauseChannel(), JSON.stringify(notice));
        }
      } else {
        holders = Object.values(await this.o.link.cmd.hgetall(this.o.keys.call(scope, callSid)));
      }
    } catch (err) {
      if (local) return;
      throw new ApiError(503, 'cluster_unavailable', `cannot reach Redis to find the node holding call ${callSid} (${(err as Error).message}); the command was not applied`);
    }
    // no stream anywhere: the local route answers (404 for an unknown call; CTI: queued, local state)
    if (holders.length === 0) return;
    try {
      return await this.deliver(req, reply, callSid, holders);
    } catch (err) {
      // A resume answered "not applied" (a holder lost or unreachable) must leave the call paused
      // in Redis: the client still holds its pause, and a stream the call starts later (the same
      // call reconnecting to another node) must start paused, not record what it is told is not.
      if (unpaused) {
        await this.o.link.cmd.set(this.o.keys.paused(scope, callSid), '1', 'PX', CALL_KEY_TTL_MS).catch((e: unknown) =>
          this.o.log.error({ err: e, callSid }, 'cluster: a resume answered 503 could not put the call\'s pause back in Redis'));
      }
      throw err;
    }
  }

  /** The command to every node holding the call; the answer, or 503 naming who applied it. */
  private async deliver(req: FastifyRequest, reply: FastifyReply, callSid: string, holders: string[]): Promise<FastifyReply | undefined> {
    let owners: Awaited<ReturnType<ClusterView['classify']>>;
    try {
      owners = await this.o.view.classify(holders);
    } catch (err) {
      throw new ApiError(503, 'cluster_unavailable', `cannot check which node holds call ${callSid} (${(err as Error).message}); the command was not applied`);
    }
    if (owners.alive.length === 0) {
      throw new ApiError(503, 'owner_lost', `call ${callSid} is held by node ${owners.dead.join(', ')}, which stopped answering (lost); the command was not applied`);
    }
    if (owners.alive.length === 1 && owners.alive[0] === this.o.nodeId) return;
    // Several forks of one call may live on several nodes: every holder gets the command.
    const settled = await Promise.allSettled(owners.alive.map((n) => this.sendTo(n, req)));
    const unreached = settled.findIndex((r) => r.status === 'rejected');
    if (unreached >= 0) {
      // a holder that could not be reached: 503, and it must say which holders did apply the
      // command (a pause applied by one fork and answered "not applied" would be retried forever)
      const err = (settled[unreached] as PromiseRejectedResult).reason as Error;
      const applied = owners.alive.filter((_, i) => {
        const r = settled[i]!;
        return r.status === 'fulfilled' && r.value.status >= 200 && r.value.status < 300;
      });
      if (applied.length === 0 || !(err instanceof ApiError)) throw err;
      throw new ApiError(err.status, err.code, `${err.message}; node ${applied.join(', ')}, which also holds the call, applied it`);
    }
    const replies = settled.map((r) => (r as PromiseFulfilledResult<CommandReply>).value);
    const answer = replies.find((r) => r.status < 200 || r.status >= 300) ?? replies[0]!; // alive is not empty (checked above)
    // returning the sent reply tells fastify to skip the local handler
    return reply.code(answer.status).header('content-type', answer.contentType).header(FORWARDED_HEADER, owners.alive.join(',')).send(answer.body);
  }

  /** A request this process made itself (a forwarded command run here, a replay): the API auth checked its key. */
  private fromInside(req: FastifyRequest): boolean {
    return accessOf(req).internal === true;
  }

  private message(req: FastifyRequest): CommandMessage {
    const headers: Record<string, string> = {};
    for (const h of PASSED_HEADERS) {
      const v = req.headers[h];
      if (typeof v === 'string') headers[h] = v;
    }
    const body = req.body;
    const access = accessOf(req);
    return {
      id: randomUUID(),
      from: this.o.nodeId,
      method: req.method,
      url: req.url,
      headers,
      scope: access.accountSid,
      actor: access.actor,
      ...(body === undefined || body === null ? {} : { payload: typeof body === 'string' ? body : JSON.stringify(body) }),
    };
  }

  private async sendTo(nodeId: string, req: FastifyRequest): Promise<CommandReply> {
    const msg = this.message(req);
    if (nodeId === this.o.nodeId) return this.inject(msg);
    const answer = new Promise<CommandReply | null>((resolve) => {
      const timer = setTimeout(() => { this.waiting.delete(msg.id); resolve(null); }, FORWARD_TIMEOUT_MS);
      this.waiting.set(msg.id, (r) => { clearTimeout(timer); this.waiting.delete(msg.id); resolve(r); });
    });
    let receivers: number;
    try {
      receivers = await this.o.link.cmd.publish(this.o.keys.cmdChannel(nodeId), JSON.stringify(msg));
    } catch (err) {
      this.waiting.get(msg.id)?.({ id: msg.id, status: 0, contentType: '', body: '' });
      throw new ApiError(503, 'cluster_unavailable', `could not send the command to node ${nodeId} (${(err as Error).message}); it was not applied`);
    }
    if (receivers === 0) {
      this.waiting.get(msg.id)?.({ id: msg.id, status: 0, contentType: '', body: '' });
      throw new ApiError(503, 'owner_unreachable', `node ${nodeId} holds the call but is not listening for commands; the command was not applied there`);
    }
    const r = await answer;
    if (r === null) {
      throw new ApiError(503, 'owner_unreachable', `node ${nodeId} holds the call but did not answer within ${FORWARD_TIMEOUT_MS} ms; the command may not have been applied there`);
    }
    return r;
  }

  private answered(message: string): void {
    let r: CommandReply;
    try {
      r = JSON.parse(message) as CommandReply;
    } catch {
      return;
    }
    this.waiting.get(r.id)?.(r);
  }

  private async inject(msg: CommandMessage): Promise<CommandReply> {
    const res = await this.o.app.inject({
      method: msg.method as 'POST',
      url: msg.url,
      headers: {
        ...msg.headers,
        [FORWARDED_HEADER]: msg.from,
        authorization: `Bearer ${this.o.internalKey}`,
        // eslint-disable-next-line @typescript-eslint/no-unnecessary-condition -- msg is JSON from another node, not validated
        [INTERNAL_ACTOR_HEADER]: String(msg.actor ?? 'internal'),
        ...(typeof msg.scope === 'string' && msg.scope !== '' ? { [INTERNAL_SCOPE_HEADER]: msg.scope } : {}),
      },
      ...(msg.payload === undefined ? {} : { payload: msg.payload }),
    });
    return { id: msg.id, status: res.statusCode, contentType: String(res.headers['content-type'] ?? 'application/json'), body: res.body };
  }

  private async execute(message: string): Promise<void> {
    let msg: CommandMessage;
    try {
      msg = JSON.parse(message) as CommandMessage;
    } catch {
      return;
    }
    const r = await this.inject(msg).catch((err: Error): CommandReply => ({
      id: msg.id, status: 500, contentType: 'application/json', body: JSON.stringify({ error: 'internal', message: err.message }),
    }));
    await this.o.link.cmd.publish(this.o.keys.replyChannel(msg.from), JSON.stringify(r)).catch((err: Error) =>
      this.o.log.warn({ err, from: msg.from }, 'cluster: could not answer a forwarded command'));
  }

  /** Run a command on this node as if forwarded (e.g. replaying queued CTI events). */
  runLocally(method: string, url: string, body: unknown, actor = 'internal'): Promise<CommandReply> {
    return this.inject({
      id: randomUUID(), from: this.o.nodeId, method, url, headers: { 'content-type': 'application/json' },
      payload: JSON.stringify(body), scope: null, actor,
    });
  }
}
