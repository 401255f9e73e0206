// GET /twilio/v1: the WebSocket edge Twilio dials. The upgrade is checked before any WebSocket
// exists (draining, query string, X-Twilio-Signature against the public URL, MAX_STREAMS and
// descriptor headroom); an accepted socket gets its protocol handler attached synchronously, so
// no early message is missed.
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { Logger } from 'pino';
import type { GatewayConfig } from '../config-types.js';
import type { Recorder } from '../../recorder/recorder.js';
import type { GatewayMetrics } from '../metrics.js';
import { candidateUrls, derivePublicUrl, matchTwilioSignature } from './twilio-signature.js';
import { TwilioStreamHandler } from './twilio-stream.js';
import type { Alarms } from '../../recorder/alarms.js';
import type { FdBudget } from '../fd-budget.js';

/** More than this many bad messages within the window close a stream (1007/1008). */
export const ERROR_BUDGET = { limit: 50, windowMs: 10_000 } as const;

export const TWILIO_STREAM_PATH = '/twilio/v1';

export interface TwilioRouteDeps {
  config: GatewayConfig;
  recorder: Recorder;
  metrics: GatewayMetrics;
  log: Logger;
  isDraining: () => boolean;
  /** live handlers, for drain and tests */
  handlers: Set<TwilioStreamHandler>;
  alarms: Alarms;
  /** WebSockets open now, started or not (MAX_STREAMS counts them; kept by this route) */
  sockets: { open: number };
  /** descriptor headroom; null where it cannot be measured */
  fdBudget: FdBudget | null;
  /** frames refused for running ahead of their stream's age */
  onLeadRefused: () => void;
  now?: () => number;
}

type AccountCheck = (accountSid: string) => boolean;

declare module 'fastify' {
  interface FastifyRequest {
    twilioAccountCheck?: AccountCheck;
  }
}

export function registerTwilioRoute(app: FastifyInstance, deps: TwilioRouteDeps): void {
  const { config, metrics } = deps;
  const signed = config.sources.filter((s) => s.authToken !== null);
  const tokens = signed.map((s) => s.authToken as string);
  const configured = new Set(config.sources.map((s) => s.accountSid));
  const fixedUrls = config.websocketTargetUrl ? candidateUrls(config.websocketTargetUrl) : null;

  const refuse = (reply: FastifyReply, status: number, code: string, message: string) => {
    metrics.upgradeRefused(code);
    return reply.code(status).send({ error: code, message });
  };

  async function checkUpgrade(req: FastifyRequest, reply: FastifyReply) {
    if (!req.ws) {
      // a browser or a probe: say what this URL is, in the API's error shape
      return reply.code(426).header('upgrade', 'websocket').send({
        error: 'upgrade_required',
        message: `${TWILIO_STREAM_PATH} is the Twilio Media Streams WebSocket: connect with Upgrade: websocket (point <Stream url="wss://..."> at it)`,
      });
    }
    if (deps.isDraining()) return refuse(reply, 503, 'draining', 'this node is shutting down; connect to another node');
    if (req.raw.url !== undefined && req.raw.url.includes('?')) {
      return refuse(reply, 400, 'query_not_allowed', 'Twilio strips query strings from stream URLs; pass values as <Parameter> instead');
    }
    let check: AccountCheck;
    if (tokens.length > 0) {
      const urls = fixedUrls ?? candidateUrls(derivePublicUrl(req.headers, TWILIO_STREAM_PATH, false));
      const header = req.headers['x-twilio-signature'];
      const index = matchTwilioSignature(tokens, typeof header === 'string' ? header : undefined, urls);
      if (index < 0) {
        return refuse(reply, 403, 'forbidden', `X-Twilio-Signature is missing or does not match ${urls[0]} for any configured account`);
      }
      const account = signed[index]!.accountSid; // index >= 0 points into `signed`
      check = (sid) => sid === account;
    } else if (configured.size > 0) {
      check = (sid) => configured.has(sid);
    } else {
      check = () => true; // embedded default: no account configured, record any
    }
    // Limits after the signature: an unsigned flood is refused as forbidden and holds nothing.
    if (deps.sockets.open >= config.maxStreams) {
      return refuse(reply, 503, 'max_streams', `this node holds MAX_STREAMS=${config.maxStreams} streams; connect to another node`);
    }
    if (deps.fdBudget !== null && !deps.fdBudget.allowsOneMore()) {
      return refuse(reply, 503, 'fd_headroom', 'this node is close to its open-file limit (RLIMIT_NOFILE); connect to another node');
    }
    req.twilioAccountCheck = check;
  }

  const now = deps.now ?? (() => performance.now());
  const onAudioDropped = (reason: string, ids: { callSid: string; streamSid: string }, detail: string) => {
    deps.alarms.raise('audio_dropped', { message: detail, callSid: ids.callSid, streamSid: ids.streamSid, details: { reason } });
  };

  app.get(TWILIO_STREAM_PATH, { websocket: true, preValidation: checkUpgrade }, (socket, req) => {
    const handler = new TwilioStreamHandler({ close: (code, reason) => socket.close(code, reason) }, {
      recorder: deps.recorder,
      acceptAccount: req.twilioAccountCheck ?? (() => false),
      log: deps.log,
      onProtocolError: metrics.protocolError,
      errorBudget: ERROR_BUDGET,
      maxLeadMs: config.maxTimestampLeadS * 1000,
      startTimeoutMs: config.startTimeoutS * 1000,
      now,
      onAudioDropped,
      onLeadRefused: deps.onLeadRefused,
    });
    deps.sockets.open++;
    deps.handlers.add(handler);
    socket.on('message', (data, isBinary) => handler.onMessage(data as Buffer, isBinary));
    socket.on('error', (err: Error & { code?: string }) => {
      if (err.code === 'WS_ERR_UNSUPPORTED_MESSAGE_LENGTH') handler.onTooLarge();
      else deps.log.warn({ err }, 'stream socket error');
    });
    socket.on('close', (code) => {
      deps.sockets.open--;
      handler.onClose(code);
      void handler.finished.finally(() => deps.handlers.delete(handler));
    });
  });
}
