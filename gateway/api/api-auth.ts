// Access control for the `/v1/*` API (contract sections 1 and 4). With API_KEYS set, every
// request needs `Authorization: Bearer <key>`; without keys the API answers only loopback peers.
// `/healthz`, `/readyz`, `/metrics` and the Twilio WebSocket are not under `/v1/` and stay open.
import { createHash, timingSafeEqual } from 'node:crypto';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { ApiError } from './errors.js';

export interface ApiAuthOptions {
  /** accepted bearer keys; empty = loopback-only */
  apiKeys: string[];
}

const REALM = 'Bearer realm="recording-gateway"';

/** Whether this path (query string ignored) is part of the protected API. */
export function isProtectedPath(url: string): boolean {
  const p = url.split('?', 1)[0].toLowerCase();
  return p === '/v1' || p.startsWith('/v1/');
}

/** 127.0.0.0/8, ::1 and IPv4-mapped 127.x.y.z. */
export function isLoopbackAddress(address: string | undefined): boolean {
  if (!address) return false;
  const v4 = address.toLowerCase().startsWith('::ffff:') ? address.slice(7) : address;
  return /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(v4) || address === '::1';
}

/** Headers a reverse proxy adds: a loopback peer that carries them is relaying someone else. */
const FORWARDING_HEADERS = ['forwarded', 'x-forwarded-for', 'x-real-ip'];

function digest(s: string): Buffer {
  return createHash('sha256').update(s, 'utf8').digest();
}

/** The token of `Authorization: Bearer <token>`, or null when the header is absent or another scheme. */
function bearerToken(request: FastifyRequest): string | null {
  const header = request.headers.authorization;
  if (typeof header !== 'string') return null;
  const m = /^Bearer +(\S+) *$/i.exec(header);
  return m ? m[1] : null;
}

export function installApiAuth(app: FastifyInstance, options: ApiAuthOptions): void {
  const keys = options.apiKeys.filter((k) => k.length > 0).map(digest);

  app.addHook('onRequest', async (request) => {
    // the route pattern covers URLs the raw-path check might miss; the raw path covers unknown
    // routes, so nobody can probe which /v1 routes exist without a key
    const route = request.routeOptions.url;
    if (!isProtectedPath(request.url) && !(route !== undefined && isProtectedPath(route))) return;

    if (keys.length === 0) {
      // the socket's peer, never request.ip: with trustProxy that comes from a header anybody can set
      const peer = request.raw.socket.remoteAddress;
      const proxied = FORWARDING_HEADERS.some((h) => request.headers[h] !== undefined);
      if (isLoopbackAddress(peer) && !proxied) return;
      throw new ApiError(
        403, 'forbidden',
        `the API answers only local (loopback) clients because no API keys are configured; ` +
          `set API_KEYS to allow remote access with "Authorization: Bearer <key>" (request came from ${String(peer)}${proxied ? ' through a proxy' : ''})`,
      );
    }

    const token = bearerToken(request);
    if (token === null) {
      throw new ApiError(401, 'unauthorized', 'this API needs "Authorization: Bearer <key>" with one of the configured API_KEYS', {
        'www-authenticate': REALM,
      });
    }
    // compare digests (equal length) against every key, without stopping at the first match
    const given = digest(token);
    let ok = false;
    for (const k of keys) ok = timingSafeEqual(given, k) || ok;
    if (!ok) {
      throw new ApiError(401, 'unauthorized', 'the bearer key is not one of the configured API_KEYS', {
        'www-authenticate': `${REALM}, error="invalid_token"`,
      });
    }
  });
}
