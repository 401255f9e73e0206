// A gateway node exactly as gateway/main.ts starts it, plus one probe command for the cluster
// test and the latency script: POST /v1/calls/:callSid/ping answers which node ran it and when
// (epoch ms, sub-ms), 404 when this node holds no stream of the call. It is an ordinary per-call
// route, so cluster routing forwards it like pause/resume.
import { runNode, fatal } from '../gateway/run-node.js';
import { ApiError } from '../gateway/api/errors.js';

const wallNowMs = () => performance.timeOrigin + performance.now();

runNode({
  gatewayOptions: { redisPrefix: process.env.REDIS_PREFIX },
  prepare: (gw) => {
    // in the /v1 scope: its auth and its cluster routing apply, as to pause/resume
    gw.addV1Routes((v1) => v1.post('/calls/:callSid/ping', async (req) => {
      const { callSid } = req.params as { callSid: string };
      const at = wallNowMs();
      if (gw.recorder.streamsOfCall(callSid).length === 0) throw new ApiError(404, 'not_found', `no live stream of call ${callSid} on this node`);
      return { nodeId: gw.config.nodeId, at, forwardedBy: req.headers['x-gateway-forwarded-by'] ?? null };
    }));
  },
}).catch(fatal);
