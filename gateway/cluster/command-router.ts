// Per-call commands reach the node holding the call. A preHandler hook looks at every routed
// request (POST /v1/calls/:callSid/<anything>, POST /v1/cti/events); when the call is held by
// another node it sends the request over Redis pub/sub (`cmd:<owner>`, correlation id, answer
// on `reply:<sender>`), and the owner runs the SAME route locally through app.inject with the
// forwarded header, so pause/resume/CTI routes need no cluster code of their own. A request
// carrying the header is never forwarded again. When the owner cannot be reached the answer is
// 503 with the reason, never a 200 that did not happen.
import { randomUUID } from 'node:crypto';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { Logger } from 'pino';
import { ApiError } from '../api/errors.js';
import type { Keys } from './keys.js';
import type { RedisLink } from './redis-link.js';
import type { ClusterView } from './cluster-view.js';
import type { PendingCti } from './pending-cti.js';

export const FORWARDED_HEADER = 'x-gateway-forwarded-by';
export const FORWARD_TIMEOUT_MS = 1000;
/** headers that travel with a forwarded command (auth is checked again by the owner) */
const PASSED_HEADERS = ['authorization', 'content-type', 'accept'];

interface CommandMessage {
  id: string;
  from: string;
  method: string;
  url: string;
  headers: Record<string, string>;
  payload?: string;
}

export interface CommandReply {
  id: string;
  status: number;
  contentType: string;
  body: string;
}

interface Routed {
  callSid: string;
  /** CTI: with no holder anywhere the event waits in Redis for the stream */
  pendingWhenUnowned: boolean;
}

/** Which requests are per-call commands, and of which call. */
export function routedCall(req: FastifyRequest): Routed | null {
  if (req.method !== 'POST') return null;
  const url = req.routeOptions.url ?? '';
  if (url.startsWith('/v1/calls/:callSid/')) {
    const callSid = (req.params as { callSid?: unknown }).callSid;
    return typeof callSid === 'string' ? { callSid, pendingWhenUnowned: false } : null;
  }
  if (url === '/v1/cti/events') {
    const callSid = (req.body as { callSid?: unknown } | null)?.callSid;
    return typeof callSid === 'string' ? { callSid, pendingWhenUnowned: true } : null;
  }
  return null;
}

export interface CommandRouterOptions {
  app: FastifyInstance;
  link: RedisLink;
  keys: Keys;
  nodeId: string;
  log: Logger;
  view: ClusterView;
  pendingCti: PendingCti;
  /** does this node hold a live stream of the call? */
  holdsLocally: (callSid: string) => boolean;
  /** headers that let an in-process replay pass the API auth (a configured key); never sent anywhere */
  internalHeaders?: Record<string, string>;
}

export class CommandRouter {
  private readonly waiting = new Map<string, (r: CommandReply) => void>();

  constructor(private readonly o: CommandRouterOptions) {}

  start(): void {
    const { link, keys, nodeId } = this.o;
    link.onReady(() => {
      link.sub.subscribe(keys.cmdChannel(nodeId), keys.replyChannel(nodeId)).catch((err: Error) =>
        this.o.log.warn({ err: err.message }, 'cluster: subscribe failed'));
    });
    link.sub.on('message', (channel: string, message: string) => {
      if (channel === keys.cmdChannel(nodeId)) void this.execute(message);
      else if (channel === keys.replyChannel(nodeId)) this.answered(message);
    });
    this.o.app.addHook('preHandler', (req, reply) => this.route(req, reply));
  }

  private async route(req: FastifyRequest, reply: FastifyReply): Promise<FastifyReply | undefined> {
    if (req.headers[FORWARDED_HEADER] !== undefined) return;
    const routed = routedCall(req);
    if (routed === null) return;
    const { callSid } = routed;
    const local = this.o.holdsLocally(callSid);
    if (!this.o.link.ready) {
      // Without Redis we cannot know the other holders; a call held here still gets its command.
      if (local) return;
      throw new ApiError(503, 'cluster_unavailable', `cannot reach Redis to find the node holding call ${callSid}; the command was not applied, retry shortly`);
    }
    let holders: string[];
    try {
      holders = routed.pendingWhenUnowned
        ? await this.o.pendingCti.pushUnlessOwned(callSid, {
          event: { ...(req.body as Record<string, unknown>) },
          receivedBy: this.o.nodeId,
          receivedAt: new Date().toISOString(),
        })
        : Object.values(await this.o.link.cmd.hgetall(this.o.keys.call(callSid)));
    } catch (err) {
      if (local) return;
      throw new ApiError(503, 'cluster_unavailable', `cannot reach Redis to find the node holding call ${callSid} (${(err as Error).message}); the command was not applied`);
    }
    // no stream anywhere: the local route answers (404 for pause; CTI: queued, local state)
    if (holders.length === 0) return;
    const owners = await this.o.view.classify(holders).catch(() => null);
    if (owners === null) throw new ApiError(503, 'cluster_unavailable', `cannot check which node holds call ${callSid}; the command was not applied`);
    if (owners.alive.length === 0) {
      throw new ApiError(503, 'owner_lost', `call ${callSid} is held by node ${owners.dead.join(', ')}, which stopped answering (lost); the command was not applied`);
    }
    if (owners.alive.length === 1 && owners.alive[0] === this.o.nodeId) return;
    // Several forks of one call may live on several nodes: every holder gets the command.
    const replies = await Promise.all(owners.alive.map((n) => this.sendTo(n, req)));
    const answer = replies.find((r) => r.status < 200 || r.status >= 300) ?? replies[0];
    // returning the sent reply tells fastify to skip the local handler
    return reply.code(answer.status).header('content-type', answer.contentType).header(FORWARDED_HEADER, owners.alive.join(',')).send(answer.body);
  }

  private message(req: FastifyRequest): CommandMessage {
    const headers: Record<string, string> = {};
    for (const h of PASSED_HEADERS) {
      const v = req.headers[h];
      if (typeof v === 'string') headers[h] = v;
    }
    const body = req.body;
    return {
      id: randomUUID(),
      from: this.o.nodeId,
      method: req.method,
      url: req.url,
      headers,
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
      throw new ApiError(503, 'owner_unreachable', `node ${nodeId} holds the call but is not listening for commands; the command was not applied`);
    }
    const r = await answer;
    if (r === null) {
      throw new ApiError(503, 'owner_unreachable', `node ${nodeId} holds the call but did not answer within ${FORWARD_TIMEOUT_MS} ms; the command may not have been applied`);
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
      headers: { ...msg.headers, [FORWARDED_HEADER]: msg.from },
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
      this.o.log.warn({ err: err.message, from: msg.from }, 'cluster: could not answer a forwarded command'));
  }

  /** Run a command on this node as if forwarded (e.g. replaying queued CTI events). */
  runLocally(method: string, url: string, body: unknown): Promise<CommandReply> {
    return this.inject({ id: randomUUID(), from: this.o.nodeId, method, url, headers: { ...this.o.internalHeaders, 'content-type': 'application/json' }, payload: JSON.stringify(body) });
  }
}
