// `/v1` is one fastify plugin scope: the API auth (onRequest), the cluster's routing of per-call
// commands (preHandler) and the API's error and 404 answers apply to every route registered in
// it and to every unknown path under /v1, and to nothing outside it. Routes outside /v1 keep
// their own rules: /twilio/v1 (signature), POST /twilio/v1/events (signature or loopback),
// /healthz, /readyz, /metrics (open). Routes register paths relative to the prefix ('/calls').
// The TypeBox type provider types each handler's params, query and body from its route schema
// (types only: ajv still validates, so the answers to bad input are fastify's own, unchanged).
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import type {
  FastifyBaseLogger, FastifyInstance, FastifyReply, FastifyRequest, RawReplyDefaultExpression, RawRequestDefaultExpression, RawServerDefault,
} from 'fastify';
import { installApiAuth, type ApiAuthOptions } from './api-auth.js';
import { errorHandler, notFoundHandler } from './errors.js';

export const V1_PREFIX = '/v1';

/** The /v1 scope as its routes see it: request types come from the route's TypeBox schemas. */
export type ApiInstance = FastifyInstance<RawServerDefault, RawRequestDefaultExpression, RawReplyDefaultExpression, FastifyBaseLogger, TypeBoxTypeProvider>;

export interface V1ScopeOptions {
  auth: ApiAuthOptions;
  /**
   * Cluster mode: sends a per-call command to the node holding the call and answers with its
   * reply (a returned reply skips the local handler), or lets the local route run (undefined).
   */
  routeCommand?: (req: FastifyRequest, reply: FastifyReply) => Promise<FastifyReply | undefined>;
}

/** Registers the /v1 scope; `routes` adds the API's routes to it. */
export function registerV1Scope(app: FastifyInstance, options: V1ScopeOptions, routes: (v1: ApiInstance) => void): void {
  // a /v1 route registered beside the scope would answer with no key and no routing: refuse it
  app.addHook('onRoute', (route) => {
    const underV1 = route.url === V1_PREFIX || route.url.startsWith(`${V1_PREFIX}/`);
    if (underV1 && !(route.prefix === V1_PREFIX || route.prefix.startsWith(`${V1_PREFIX}/`))) {
      throw new Error(`${route.method.toString()} ${route.url}: a /v1 route must be registered in the /v1 scope (Gateway.addV1Routes), or it would skip the API keys`);
    }
  });
  void app.register(async (scope) => {
    const v1 = scope.withTypeProvider<TypeBoxTypeProvider>();
    v1.setErrorHandler(errorHandler);
    // scoped 404: an unknown /v1 path passes the auth first, so nobody learns which routes exist without a key
    v1.setNotFoundHandler(notFoundHandler);
    installApiAuth(v1, options.auth);
    const { routeCommand } = options;
    if (routeCommand) v1.addHook('preHandler', routeCommand);
    routes(v1);
  }, { prefix: V1_PREFIX });
}
