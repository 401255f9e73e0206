// A gateway node exactly as gateway/main.ts starts it, plus one probe command for the cluster
// test and the latency script: POST /v1/calls/:callSid/ping answers which node ran it and when
// (epoch ms, sub-ms), 404 when this node holds no stream of the call. It is an ordinary per-call
// route, so cluster routing forwards it like pause/resume.
import { loadConfig, ConfigError } from '../gateway/config.js';
import { buildGateway } from '../gateway/server.js';
import { ApiError } from '../gateway/api/errors.js';

const wallNowMs = () => performance.timeOrigin + performance.now();

async function main(): Promise<void> {
  let config;
  try {
    config = loadConfig(process.env);
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`config error: ${err.message}\n`);
      process.exit(78);
    }
    throw err;
  }
  const gw = await buildGateway(config, { redisPrefix: process.env.REDIS_PREFIX });
  gw.app.post('/v1/calls/:callSid/ping', async (req) => {
    const { callSid } = req.params as { callSid: string };
    const at = wallNowMs();
    if (gw.recorder.streamsOfCall(callSid).length === 0) throw new ApiError(404, 'not_found', `no live stream of call ${callSid} on this node`);
    return { nodeId: config.nodeId, at, forwardedBy: req.headers['x-gateway-forwarded-by'] ?? null };
  });
  const port = await gw.listen();
  gw.log.info({ port, host: config.host }, 'gateway listening');
  let stopping = false;
  const stop = () => {
    if (stopping) return;
    stopping = true;
    gw.drain().then(() => process.exit(0), () => process.exit(1));
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

main().catch((err: Error) => {
  process.stderr.write(`fatal: ${err.stack ?? err.message}\n`);
  process.exit(1);
});
