// Access control for the `/v1/*` API (contract sections 1 and 4). With API_KEYS set, every
// request needs `Authorization: Bearer <key>`; without keys the API answers only loopback peers.
// Installed on the /v1 scope (v1-scope.ts), so it sees exactly the requests that scope answers;
// `/healthz`, `/readyz`, `/metrics` and the Twilio WebSocket are outside it and stay open.
import { createHash, timingSafeEqual } from 'node:crypto';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { ApiError } from './errors.js';

export interface ApiAuthOptions {
  /** accepted bearer keys that see every account (API_KEYS) */
  apiKeys: string[];
  /** per data source: keys that see and control only that account's calls and recordings */
  sourceKeys?: { accountSid: string; apiKeys: string[] }[];
  /**
   * This process's own key for in-process requests (replayed CTI events, TaskRouter dispatch,
   * commands forwarded by another node over Redis, which already checked the caller). With it the
   * request may name its scope and actor in INTERNAL_SCOPE_HEADER / INTERNAL_ACTOR_HEADER.
   */
  internalKey?: string;
}

/** Who is calling and which calls they may see. */
export interface ApiAccess {
  /** null: every account (API_KEYS, loopback without keys, internal); else the one account */
  accountSid: string | null;
  /** for audit lines: `loopback`, `key:<12 hex of sha256>` (never the key), or what an internal request names */
  actor: string;
  /** made by this process with its own key (a forwarded command, a replay) */
  internal?: boolean;
}

export const INTERNAL_SCOPE_HEADER = 'x-gateway-scope';
export const INTERNAL_ACTOR_HEADER = 'x-gateway-actor';
const ALL: ApiAccess = { accountSid: null, actor: 'loopback' };
const accessByRequest = new WeakMap<object, ApiAccess>();

/** The access of an API request (routes outside /v1 and requests before auth: every account). */
export function accessOf(request: FastifyRequest): ApiAccess {
  return accessByRequest.get(request.raw) ?? ALL;
}

/** May this access see calls and recordings of `accountSid`? */
export function canSee(access: ApiAccess, accountSid: string): boolean {
  return access.accountSid === null || access.accountSid === accountSid;
}

/** A short, stable, non-reversible name of a key for logs. */
export function keyId(key: string): string {
  return `key:${digest(key).toString('hex').slice(0, 12)}`;
}

const REALM = 'Bearer realm="recording-gateway"';

/** 127.0.0.0/8, ::1 and IPv4-mapped 127.x.y.z. */
export function isLoopbackAddress(address: string | undefined): boolean {
  if (!address) return false;
  const v4 = address.toLowerCase().startsWith('::ffff:') ? address.slice(7) : address;
  return /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(v4) || address === '::1';
}

/** Headers a reverse proxy adds: a loopback peer that carries them is relaying someone else. */
const FORWARDING_HEADERS = ['forwarded', 'x-forwarded-for', 'x-real-ip'];

/**
 * A request from this machine that no proxy relayed: the socket's peer, never request.ip (with
 * trustProxy that comes from a header anybody can set). Returns null when local, else why not.
 */
export function notLocalReason(request: FastifyRequest): string | null {
  const peer = request.raw.socket.remoteAddress;
  const proxied = FORWARDING_HEADERS.some((h) => request.headers[h] !== undefined);
  if (isLoopbackAddress(peer) && !proxied) return null;
  return `request came from ${String(peer)}${proxied ? ' through a proxy' : ''}`;
}

function digest(s: string): Buffer {
  return createHash('sha256').update(s, 'utf8').digest();
}

/** The token of `Authorization: Bearer <token>`, or null when the header is absent or another scheme. */
function bearerToken(request: FastifyRequest): string | null {
  const header = request.headers.authorization;
  if (typeof header !== 'string') return null;
  const m = /^Bearer +(\S+) *$/i.exec(header);
  return m?.[1] ?? null;
}

interface KnownKey {
  digest: Buffer;
  accountSid: string | null;
  actor: string;
}

/** Adds the check to `scope` (the /v1 scope): every request it answers, routed or 404, is checked. */
export function installApiAuth(scope: FastifyInstance, options: ApiAuthOptions): void {
  const keys: KnownKey[] = [
    ...options.apiKeys.filter((k) => k.length > 0).map((k) => ({ digest: digest(k), accountSid: null, actor: keyId(k) })),
    ...(options.sourceKeys ?? []).flatMap((s) => s.apiKeys.map((k) => ({ digest: digest(k), accountSid: s.accountSid, actor: keyId(k) }))),
  ];
  const internal = options.internalKey === undefined ? null : digest(options.internalKey);

  scope.addHook('onRequest', async (request) => {
    const token = bearerToken(request);
    if (internal !== null && token !== null && timingSafeEqual(digest(token), internal)) {
      const scope = request.headers[INTERNAL_SCOPE_HEADER];
      const actor = request.headers[INTERNAL_ACTOR_HEADER];
      accessByRequest.set(request.raw, {
        accountSid: typeof scope === 'string' && scope !== '' ? scope : null,
        actor: typeof actor === 'string' && actor !== '' ? actor : 'internal',
        internal: true,
      });
      return;
    }

    if (keys.length === 0) {
      const why = notLocalReason(request);
      if (why === null) return;
      throw new ApiError(
        403, 'forbidden',
        `the API answers only local (loopback) clients because no API keys are configured; ` +
          `set API_KEYS to allow remote access with "Authorization: Bearer <key>" (${why})`,
      );
    }

    if (token === null) {
      throw new ApiError(401, 'unauthorized', 'this API needs "Authorization: Bearer <key>" with one of the configured API_KEYS', {
        'www-authenticate': REALM,
      });
    }
    // compare digests (equal length) against every key, without stopping at the first match
    const given = digest(token);
    let found: KnownKey | null = null;
    for (const k of keys) if (timingSafeEqual(given, k.digest) && found === null) found = k;
    if (found !== null) accessByRequest.set(request.raw, { accountSid: found.accountSid, actor: found.actor });
    else {
      throw new ApiError(401, 'unauthorized', 'the bearer key is not one of the configured API_KEYS', {
        'www-authenticate': `${REALM}, error="invalid_token"`,
      });
    }
  });
}
