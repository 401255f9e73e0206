// POST /twilio/v1/events: TaskRouter's workspace EventCallbackUrl. Form-encoded and signed
// (X-Twilio-Signature over the public URL + sorted form fields, like the stream upgrade);
// answered 204 (Twilio wants a quick 2xx; unmapped event types are acknowledged and ignored).
import type { FastifyInstance } from 'fastify';
import type { GatewayConfig } from '../config-types.js';
import type { CallControl } from '../../recorder/call-control.js';
import { candidateUrls, derivePublicUrl, matchTwilioSignature } from '../twilio-signature.js';
import { BadTaskRouterEvent, mapTaskRouterEvent } from '../taskrouter-mapping.js';
import { applyCtiEvent } from './calls-routes.js';
import { ApiError } from './errors.js';
import type { CtiEvent } from '../../recorder/call-states.js';

export const TASKROUTER_EVENTS_PATH = '/twilio/v1/events';
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
  dispatch?: (ev: CtiEvent) => Promise<void>;
}

export function registerTaskRouterRoute(app: FastifyInstance, deps: TaskRouterDeps): void {
  const { config, control } = deps;
  const dispatch = deps.dispatch ?? (async (ev: CtiEvent) => { await applyCtiEvent(control, ev); });
  const signed = config.sources.filter((s) => s.authToken !== null);
  const tokens = signed.map((s) => s.authToken as string);
  const configured = new Set(config.sources.map((s) => s.accountSid));
  const lastCall = new Map<string, string>();

  app.register(async (scope) => {
    scope.addContentTypeParser('application/x-www-form-urlencoded', { parseAs: 'string' }, (_req, body, done) => {
      done(null, Object.fromEntries(new URLSearchParams(body as string)));
    });
    scope.post(TASKROUTER_EVENTS_PATH, async (req, reply) => {
      const params = (req.body ?? {}) as Record<string, string>;
      if (typeof params !== 'object') throw new ApiError(400, 'bad_request', 'expected a form-encoded TaskRouter event');
      if (tokens.length > 0) {
        const urls = candidateUrls(publicEventsUrl(config, req.headers));
        const header = req.headers['x-twilio-signature'];
        const i = matchTwilioSignature(tokens, typeof header === 'string' ? header : undefined, urls, params);
        if (i < 0) throw new ApiError(403, 'forbidden', `X-Twilio-Signature is missing or does not match ${urls[0]} and the form fields for any configured account`);
        if (params.AccountSid !== signed[i].accountSid) throw new ApiError(403, 'forbidden', 'AccountSid is not the account whose token signed the request');
      } else if (configured.size > 0 && !configured.has(params.AccountSid ?? '')) {
        throw new ApiError(403, 'forbidden', 'AccountSid is not a configured data source');
      }
      let mapped;
      try {
        mapped = mapTaskRouterEvent(params, (w) => lastCall.get(w));
      } catch (err) {
        if (err instanceof BadTaskRouterEvent) throw new ApiError(400, 'bad_request', err.message);
        throw err;
      }
      if (mapped.kind === 'ignored') {
        req.log.debug({ eventType: params.EventType, reason: mapped.reason }, 'TaskRouter event ignored');
        return reply.code(204).send();
      }
      for (const ev of mapped.events) await dispatch(ev);
      if (mapped.workerSid !== null && params.EventType !== 'worker.activity.update') {
        lastCall.delete(mapped.workerSid);
        lastCall.set(mapped.workerSid, mapped.events[0].callSid);
        if (lastCall.size > MAX_WORKERS) lastCall.delete(lastCall.keys().next().value as string);
      }
      return reply.code(204).send();
    });
  });
}
