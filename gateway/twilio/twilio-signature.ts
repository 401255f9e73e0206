// X-Twilio-Signature: base64(HMAC-SHA1(auth token, URL + sorted params as name+value)), exactly
// as the `twilio` package computes it (getExpectedTwilioSignature), with node:crypto only; the
// `twilio` package is a devDependency the tests cross-check against.
// See docs/twilio-media-streams.md section 3.
import crypto from 'node:crypto';

export type SignatureParams = Record<string, string | string[]>;

/**
 * The signature Twilio sends for a request to `url` with `params` (POST form fields; none for a
 * WebSocket upgrade). Keys are sorted (UTF-16 code unit order, as Array#sort); array values are
 * de-duplicated and sorted, each contributing name+value.
 */
export function computeTwilioSignature(authToken: string, url: string, params: SignatureParams = {}): string {
  let data = url;
  for (const key of Object.keys(params).sort()) {
    const value = params[key];
    if (Array.isArray(value)) {
      for (const item of Array.from(new Set(value)).sort()) data += key + item;
    } else {
      data += key + value;
    }
  }
  return crypto.createHmac('sha1', authToken).update(Buffer.from(data, 'utf-8')).digest('base64');
}

/**
 * Index of the first token whose signature over any of `urls` equals `header`, -1 when none
 * does (and always for a missing or empty header). Every token/URL pair is computed and compared
 * in constant time, so the time taken does not depend on which one matched or how closely.
 */
export function matchTwilioSignature(
  tokens: readonly string[],
  header: string | undefined,
  urls: readonly string[],
  params: SignatureParams = {},
): number {
  if (header === undefined || header === '') return -1;
  const given = Buffer.from(header, 'utf-8');
  let match = -1;
  tokens.forEach((token, index) => {
    for (const url of urls) {
      const expected = Buffer.from(computeTwilioSignature(token, url, params), 'utf-8');
      // the expected length is fixed by SHA-1 (28 base64 chars), so checking it first leaks nothing
      const equal = given.length === expected.length && crypto.timingSafeEqual(given, expected);
      if (equal && match === -1) match = index;
    }
  });
  return match;
}

interface UrlParts {
  scheme: string; // "wss://", as written
  userInfo: string; // "user:pw@" or ""
  host: string; // host without port
  port: string; // ":443" or ""
  path: string; // "" or "/twilio/v1"
  rest: string; // "?query#fragment" or ""
}

/** Split without normalising (new URL() would re-encode characters Twilio signed as written). */
function splitUrl(url: string): UrlParts | null {
  const m = /^([a-z][a-z0-9+.-]*:\/\/)([^/?#]*)/i.exec(url);
  if (!m) return null;
  const scheme = m[1] as string;
  const authority = m[2] as string;
  const at = authority.lastIndexOf('@');
  const hostPort = authority.slice(at + 1);
  // a colon starts the port only after the closing bracket of an IPv6 literal
  const colon = hostPort.indexOf(':', hostPort.lastIndexOf(']') + 1);
  const tail = url.slice(m[0].length);
  const restAt = tail.search(/[?#]/);
  return {
    scheme,
    userInfo: authority.slice(0, at + 1),
    host: colon === -1 ? hostPort : hostPort.slice(0, colon),
    port: colon === -1 ? '' : hostPort.slice(colon),
    path: restAt === -1 ? tail : tail.slice(0, restAt),
    rest: restAt === -1 ? '' : tail.slice(restAt),
  };
}

function defaultPort(scheme: string): string | null {
  switch (scheme.toLowerCase()) {
    case 'wss://':
    case 'https://':
      return ':443';
    case 'ws://':
    case 'http://':
      return ':80';
    default:
      return null;
  }
}

/**
 * The URLs a signature for `publicUrl` is checked against: the URL as given first, then with /
 * without a trailing slash on the path and with / without the scheme's default port (:443 for
 * wss/https, :80 for ws/http). A non-default port is never removed or changed.
 */
export function candidateUrls(publicUrl: string): string[] {
  const parts = splitUrl(publicUrl);
  if (!parts) return [publicUrl];
  const { scheme, userInfo, host, port, path, rest } = parts;

  const paths = [path];
  if (path === '') paths.push('/');
  else if (path === '/') paths.push('');
  else if (path.endsWith('/')) paths.push(path.slice(0, -1));
  else paths.push(`${path}/`);

  const ports = [port];
  const dflt = defaultPort(scheme);
  if (dflt !== null) {
    if (port === '') ports.push(dflt);
    else if (port === dflt) ports.push('');
  }

  const out: string[] = [publicUrl];
  for (const pt of ports) {
    for (const p of paths) {
      const candidate = `${scheme}${userInfo}${host}${pt}${p}${rest}`;
      if (!out.includes(candidate)) out.push(candidate);
    }
  }
  return out;
}

type Headers = Record<string, string | string[] | undefined>;

/** First value of a header: first element of a repeated header, first item of a comma list. */
function firstHeader(headers: Headers, name: string): string | undefined {
  let raw = headers[name];
  if (raw === undefined) {
    const key = Object.keys(headers).find((k) => k.toLowerCase() === name);
    raw = key === undefined ? undefined : headers[key];
  }
  const value = Array.isArray(raw) ? raw[0] : raw;
  if (value === undefined) return undefined;
  const first = value.split(',')[0]!.trim();
  return first === '' ? undefined : first;
}

/**
 * The public URL of this request when WEBSOCKET_TARGET_URL is not configured: scheme from the
 * first X-Forwarded-Proto (https/wss -> wss, http/ws -> ws) else from `encrypted`; host from the
 * first X-Forwarded-Host else Host; the scheme's default port dropped; `path` without its query.
 */
export function derivePublicUrl(headers: Headers, path: string, encrypted: boolean): string {
  const proto = firstHeader(headers, 'x-forwarded-proto')?.toLowerCase();
  let secure = encrypted;
  if (proto === 'https' || proto === 'wss') secure = true;
  else if (proto === 'http' || proto === 'ws') secure = false;
  const scheme = secure ? 'wss' : 'ws';

  let host = firstHeader(headers, 'x-forwarded-host') ?? firstHeader(headers, 'host') ?? 'localhost';
  const colon = host.indexOf(':', host.lastIndexOf(']') + 1);
  if (colon !== -1 && host.slice(colon) === (secure ? ':443' : ':80')) host = host.slice(0, colon);

  const cut = path.search(/[?#]/);
  let bare = cut === -1 ? path : path.slice(0, cut);
  if (!bare.startsWith('/')) bare = `/${bare}`;
  return `${scheme}://${host}${bare}`;
}
