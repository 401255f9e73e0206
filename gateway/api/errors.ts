// Every error the HTTP API answers has one shape: `{ "error": "<code>", "message": "<what and why>" }`
// (contract section 4). Routes throw ApiError; schema validation, unknown routes, fastify's own
// client errors and anything unexpected are mapped here.
import { STATUS_CODES, maxHeaderSize } from 'node:http';
import type { Socket } from 'node:net';
import type { FastifyError, FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';

export interface ErrorBody {
  error: string;
  message: string;
}

export class ApiError extends Error {
  override name = 'ApiError';
  readonly status: number;
  readonly code: string;
  /** extra response headers, e.g. WWW-Authenticate or Content-Range */
  readonly headers: Readonly<Record<string, string>>;

  constructor(status: number, code: string, message: string, headers: Record<string, string> = {}) {
    super(message);
    this.status = status;
    this.code = code;
    this.headers = headers;
  }
}

/** Codes for the client errors fastify raises by itself (bad JSON, body too large, ...). */
const CODE_BY_STATUS: Record<number, string> = {
  400: 'bad_request',
  401: 'unauthorized',
  403: 'forbidden',
  404: 'not_found',
  405: 'method_not_allowed',
  406: 'not_acceptable',
  408: 'request_timeout',
  409: 'conflict',
  411: 'length_required',
  413: 'payload_too_large',
  414: 'uri_too_long',
  415: 'unsupported_media_type',
  416: 'range_not_satisfiable',
  429: 'too_many_requests',
  431: 'request_header_fields_too_large',
};

function clientErrorCode(status: number): string {
  return CODE_BY_STATUS[status] ?? 'bad_request';
}

/** The path of a request without its query string, shortened for messages. */
function shownPath(url: string): string {
  const p = url.split('?', 1)[0]!; // split always gives at least one part
  return p.length > 200 ? `${p.slice(0, 200)}...` : p;
}

function send(reply: FastifyReply, status: number, body: ErrorBody): FastifyReply {
  return reply.code(status).type('application/json; charset=utf-8').send(body);
}

export function errorHandler(error: FastifyError | ApiError | Error, request: FastifyRequest, reply: FastifyReply): FastifyReply {
  if (error instanceof ApiError) {
    if (error.status >= 500) request.log.error({ err: error }, 'API error');
    reply.headers(error.headers);
    return send(reply, error.status, { error: error.code, message: error.message });
  }
  const fe = error as FastifyError;
  if (fe.validation) {
    // ajv's message names the field: "querystring/limit must be <= 1000"
    return send(reply, 400, { error: 'bad_request', message: fe.message });
  }
  const status = fe.statusCode;
  if (typeof status === 'number' && status >= 400 && status < 500) {
    // fastify's own client errors (FST_ERR_CTP_*, ...) carry messages meant for the client
    return send(reply, status, { error: clientErrorCode(status), message: fe.message });
  }
  request.log.error({ err: error }, 'unexpected error while handling a request');
  return send(reply, 500, {
    error: 'internal',
    message: `internal error while handling ${request.method} ${shownPath(request.url)}; the server log has the details (request id ${request.id})`,
  });
}

export function notFoundHandler(request: FastifyRequest, reply: FastifyReply): FastifyReply {
  return send(reply, 404, { error: 'not_found', message: `no route for ${request.method} ${shownPath(request.url)}` });
}

/**
 * Pass as the `frameworkErrors` option of `Fastify({...})`: errors raised before routing
 * (a URL that does not decode, a parameter longer than maxParamLength) then get the same shape.
 */
export function frameworkErrors(error: FastifyError, request: FastifyRequest, reply: FastifyReply): void {
  errorHandler(error, request, reply);
}

/**
 * Pass as the `clientErrorHandler` option of `Fastify({...})`: requests Node's parser refuses
 * before any route (headers over its 16 KiB limit, garbage, a slow client) get the same
 * `{ error, message }` shape instead of fastify's own.
 */
export function clientErrorHandler(err: Error & { code?: string }, socket: Socket): void {
  if (err.code === 'ECONNRESET' || socket.destroyed) return;
  let status: number;
  let body: ErrorBody;
  if (err.code === 'HPE_HEADER_OVERFLOW') {
    status = 431;
    body = { error: clientErrorCode(431), message: `the request headers are larger than this server accepts (${maxHeaderSize} bytes in all); send fewer or shorter headers` };
  } else if (err.code === 'ERR_HTTP_REQUEST_TIMEOUT') {
    status = 408;
    body = { error: clientErrorCode(408), message: 'the request was not received in time' };
  } else {
    status = 400;
    body = { error: clientErrorCode(400), message: 'the request is not valid HTTP/1.1 and could not be parsed' };
  }
  const json = JSON.stringify(body);
  // as Node and fastify do: answer if the socket still takes data, then close it
  if (socket.writable) {
    socket.write(`HTTP/1.1 ${status} ${STATUS_CODES[status]}\r\nContent-Length: ${Buffer.byteLength(json)}\r\nContent-Type: application/json; charset=utf-8\r\nConnection: close\r\n\r\n${json}`);
  }
  socket.destroy(err);
}

/** Installs the error and not-found handlers on the root instance (they apply to every route). */
export function installErrorHandling(app: FastifyInstance): void {
  app.setErrorHandler(errorHandler);
  app.setNotFoundHandler(notFoundHandler);
  // RFC 9112 section 3.2: an HTTP/1.1 request without Host is a 400 (the server is built with
  // Node's own check off, which answers it with an empty body). First hook: before auth.
  app.addHook('onRequest', async (request) => {
    if (request.raw.httpVersion === '1.1' && request.headers.host === undefined) {
      // and close, as Node does: such a client may not frame its next request right either
      throw new ApiError(400, 'bad_request', 'an HTTP/1.1 request needs a Host header (RFC 9112 section 3.2)', { connection: 'close' });
    }
  });
}
