// POST /twilio/v1/events: TaskRouter's workspace EventCallbackUrl. Form-encoded and signed
// (X-Twilio-Signature over the public URL + sorted form fields, like the stream upgrade);
// answered 204 (Twilio wants a quick 2xx; unmapped event types are acknowledged and ignored).
// Contract section 7: without a configured token the route answers loopback clients only, like
// /v1/* without API_KEYS. Refusals are cheap: who may post and the content type are checked
// before the body is read, the body is capped, its fields are parsed once and the signature is
// checked before anything else is done with them. Events apply to calls of the signing account.
import crypto from 'node:crypto';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import type { GatewayConfig } from '../config-types.js';
import type { CallControl } from '../../recorder/call-control.js';
import { candidateUrls, derivePublicUrl } from '../twilio/twilio-signature.js';
import { BadTaskRouterEvent, mapTaskRouterEvent, type FormFields } from '../twilio/taskrouter-mapping.js';
import { applyCtiEvent } from './call-control-routes.js';
import { notLocalReason } from './api-auth.js';
import { ApiError } from './errors.js';
import type { CtiEvent } from '../../recorder/call-states.js';

export const TASKROUTER_EVENTS_PATH = '/twilio/v1/events';
/** A TaskRouter event is a few KiB; anything much larger is refused before it is read (413). */
export const TASKROUTER_BODY_LIMIT = 64 * 1024;
/** TaskRouter sends a few dozen fields; a body with more is refused before the signature (413). */
export const TASKROUTER_MAX_FIELDS = 1000;
const FORM = 'application/x-www-form-urlencoded';
/** workers whose last call we remember (worker.activity.update names no call) */
const MAX_WORKERS = 10_000;

/** The public https URL TaskRouter posts to: WEBSOCKET_TARGET_URL's host, else the request's. */
export function publicEventsUrl(config: GatewayConfig, headers: Record<string, string | string[] | undefined>): string {
  if (config.websocketTargetUrl) {
    const u = new URL(config.websocketTargetUrl);
    return `https://${u.host}${TASKROUTER_EVENTS_PATH}`;
  }
  return derivePublicUrl(headers, TASKROUTER_EVENTS_PATH, false).replace(/^ws/, 'http');
}

export interface TaskRouterDeps {
  config: GatewayConfig;
  control: CallControl;
  /**
   * How a mapped CTI event is applied. Default: on this node. Cluster mode passes one that goes
   * through POST /v1/cti/events, which forwards it to the node holding the call (or queues it).
   */
  dispatch?: (ev: CtiEvent, actor: string) => Promise<void>;
}

/** A parsed form: every value of every field, in a map (no prototype keys). A class so the route can tell its body was made here. */
class ParsedForm {
  constructor(
    readonly all: Map<string, string[]>,
    /** first value per field, for the mapping */
    readonly fields: FormFields,
  ) {}
}

function parseForm(body: string): ParsedForm {
  const all = new Map<string, string[]>();
  for (const [k, v] of new URLSearchParams(body)) {
    const list = all.get(k);
    if (list) list.push(v);
    else {
      if (all.size >= TASKROUTER_MAX_FIELDS) throw new ApiError(413, 'payload_too_large', `a TaskRouter event has at most ${TASKROUTER_MAX_FIELDS} form fields`);
      all.set(k, [v]);
    }
  }
  const fields = new Map<string, string>();
  for (const [k, v] of all) fields.set(k, v[0]!); // each list starts with one value
  return new ParsedForm(all, fields);
}

/**
 * Index of the token whose signature over one of `urls` matches `header`, -1 if none. The same
 * computation as computeTwilioSignature (sorted name+value, repeated values de-duplicated and
 * sorted), with the field part built once for every token and URL; compared in constant time.
 */
function signedBy(tokens: readonly string[], header: string | undefined, urls: readonly string[], form: ParsedForm): number {
  if (header === undefined || header === '') return -1;
  let tail = '';
  for (const key of [...form.all.keys()].sort()) {
    const values = form.all.get(key) as string[];
    if (values.length === 1) tail += key + values[0];
    else for (const v of Array.from(new Set(values)).sort()) tail += key + v;
  }
  const tailBytes = Buffer.from(tail, 'utf-8');
  const given = Buffer.from(header, 'utf-8');
  let match = -1;
  tokens.forEach((token, i) => {
    for (const url of urls) {
      const expected = Buffer.from(crypto.createHmac('sha1', token).update(Buffer.from(url, 'utf-8')).update(tailBytes).digest('base64'), 'utf-8');
      if (given.length === expected.length && crypto.timingSafeEqual(given, expected) && match === -1) match = i;
    }
  });
  return match;
}

export function registerTaskRouterRoute(app: FastifyInstance, deps: TaskRouterDeps): void {
  const { config, control } = deps;
  const dispatch = deps.dispatch ?? (async (ev: CtiEvent, actor: string) => { await applyCtiEvent(control, ev, actor); });
  const signed = config.sources.filter((s) => s.authToken !== null);
  const tokens = signed.map((s) => s.authToken as string);
  const configured = new Set(config.sources.map((s) => s.accountSid));
  /** `<account>:<workerSid>` -> the worker's last call */
  const lastCall = new Map<string, string>();

  const refuse = (req: FastifyRequest, status: number, code: string, message: string): never => {
    req.log.warn({ status, peer: req.raw.socket.remoteAddress, forwardedFor: req.headers['x-forwarded-for'] }, `TaskRouter event refused: ${message}`);
    throw new ApiError(status, code, message);
  };

  app.register(async (scope) => {
    // only form bodies are parsed here; any other type is answered 415 before it is read
    scope.removeAllContentTypeParsers();
    scope.addContentTypeParser(FORM, { parseAs: 'string', bodyLimit: TASKROUTER_BODY_LIMIT }, (_req, body, done) => {
      try {
        done(null, parseForm(typeof body === 'string' ? body : body.toString('utf8')));
      } catch (err) {
        done(err as Error, undefined);
      }
    });
    scope.addHook('onRequest', async (req) => {
      if (tokens.length === 0) {
        const why = notLocalReason(req);
        if (why !== null) {
          refuse(req, 403, 'forbidden', `no TWILIO_AUTH_TOKEN is configured, so TaskRouter events are accepted only from local (loopback) clients (${why}); configure the account's token to accept signed events`);
        }
      }
      const type = String(req.headers['content-type'] ?? '').split(';', 1)[0]!.trim().toLowerCase();
      if (type !== FORM) refuse(req, 415, 'unsupported_media_type', `TaskRouter events are ${FORM}, not ${JSON.stringify(type.slice(0, 60) || 'none')}`);
    });
    scope.post(TASKROUTER_EVENTS_PATH, { bodyLimit: TASKROUTER_BODY_LIMIT }, async (req, reply) => {
      // the scope's only parser made the body; anything else (none at all) is refused
      const form = req.body;
      if (!(form instanceof ParsedForm)) return refuse(req, 400, 'bad_request', 'expected a form-encoded TaskRouter event');
      const { fields } = form;
      const accountSid = fields.get('AccountSid');
      let actor = 'loopback';
      if (tokens.length > 0) {
        const urls = candidateUrls(publicEventsUrl(config, req.headers));
        const header = req.headers['x-twilio-signature'];
        const i = signedBy(tokens, typeof header === 'string' ? header : undefined, urls, form);
        if (i < 0) refuse(req, 403, 'forbidden', `X-Twilio-Signature is missing or does not match ${urls[0]} and the form fields for any configured account`);
        // i >= 0 indexes `tokens`, which is `signed` mapped
        if (accountSid !== signed[i]!.accountSid) refuse(req, 403, 'forbidden', 'AccountSid is not the account whose token signed the request');
        actor = `twilio:${signed[i]!.accountSid}`;
      } else if (configured.size > 0 && !configured.has(accountSid ?? '')) {
        refuse(req, 403, 'forbidden', 'AccountSid is not a configured data source');
      }
      const account = control.scopeOf(accountSid);
      let mapped;
      try {
        mapped = mapTaskRouterEvent(fields, (w) => lastCall.get(`${account}:${w}`));
      } catch (err) {
        if (err instanceof BadTaskRouterEvent) throw new ApiError(400, 'bad_request', err.message);
        throw err;
      }
      if (mapped.kind === 'ignored') {
        req.log.debug({ eventType: fields.get('EventType')?.slice(0, 64), reason: mapped.reason }, 'TaskRouter event ignored');
        return reply.code(204).send();
      }
      for (const ev of mapped.events) await dispatch({ ...ev, accountSid: account === '' ? undefined : account }, actor);
      if (mapped.workerSid !== null && fields.get('EventType') !== 'worker.activity.update') {
        const key = `${account}:${mapped.workerSid}`;
        lastCall.delete(key);
        lastCall.set(key, mapped.events[0]!.callSid); // a mapped task has its call's event first
        if (lastCall.size > MAX_WORKERS) lastCall.delete(lastCall.keys().next().value as string);
      }
      return reply.code(204).send();
    });
  });
}
