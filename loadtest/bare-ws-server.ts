// Benchmark baseline: the least a Node process must do to accept Twilio media streams — a plain
// `ws` server that JSON-parses every message and base64-decodes media payloads, nothing else.
//
//   PORT=8090 node --import tsx loadtest/bare-ws-server.ts      (or: … bare-ws-server.ts 8090)
//
// GET /stats → { mediaMessages, messages, connections, totalConnections, eventLoopDelayP99Ms,
//                rssBytes, cpuUserUs, cpuSystemUs, pid }   (the event-loop histogram resets on each read)
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { pathToFileURL } from 'node:url';
import { WebSocketServer } from 'ws';

export interface BareStats {
  mediaMessages: number;
  messages: number;
  payloadBytes: number;
  badMessages: number;
  connections: number;
  totalConnections: number;
  eventLoopDelayP99Ms: number;
  eventLoopDelayMaxMs: number;
  rssBytes: number;
  cpuUserUs: number;
  cpuSystemUs: number;
  pid: number;
}

export interface BareServer {
  port: number;
  server: Server;
  wss: WebSocketServer;
  /** counters only (does not reset the event-loop histogram) */
  counters(): Pick<BareStats, 'mediaMessages' | 'messages' | 'payloadBytes' | 'badMessages' | 'connections' | 'totalConnections'>;
  close(): Promise<void>;
}

export async function startBareServer(port = 0, host = '0.0.0.0'): Promise<BareServer> {
  // same precision prom-client uses for nodejs_eventloop_lag_* (10 ms), so the figures compare
  const eld = monitorEventLoopDelay({ resolution: 10 });
  eld.enable();
  let mediaMessages = 0;
  let messages = 0;
  let payloadBytes = 0;
  let badMessages = 0;
  let totalConnections = 0;

  const server = createServer((req, res) => {
    if (req.method === 'GET' && req.url === '/stats') {
      const cpu = process.cpuUsage();
      const stats: BareStats = {
        mediaMessages,
        messages,
        payloadBytes,
        badMessages,
        connections: wss.clients.size,
        totalConnections,
        eventLoopDelayP99Ms: eld.percentile(99) / 1e6,
        eventLoopDelayMaxMs: eld.max / 1e6,
        rssBytes: process.memoryUsage.rss(),
        cpuUserUs: cpu.user,
        cpuSystemUs: cpu.system,
        pid: process.pid,
      };
      eld.reset();
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify(stats));
      return;
    }
    res.writeHead(404, { 'content-type': 'application/json' });
    res.end('{"error":"not_found","message":"only GET /stats and WebSocket upgrades"}');
  });
  const wss = new WebSocketServer({ server, maxPayload: 65536 });
  wss.on('connection', (ws) => {
    totalConnections++;
    ws.on('error', () => {});
    ws.on('message', (data, isBinary) => {
      messages++;
      if (isBinary) {
        badMessages++;
        return;
      }
      let msg: { event?: unknown; media?: { payload?: unknown } };
      try {
        msg = JSON.parse((data as Buffer).toString()) as typeof msg; // ws gives a Buffer (the default binaryType)
      } catch {
        badMessages++;
        return;
      }
      if (msg.event === 'media') {
        const payload = msg.media?.payload;
        if (typeof payload === 'string') {
          payloadBytes += Buffer.from(payload, 'base64').length;
          mediaMessages++;
        } else {
          badMessages++;
        }
      }
    });
  });

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => resolve());
  });
  return {
    port: (server.address() as AddressInfo).port,
    server,
    wss,
    counters: () => ({ mediaMessages, messages, payloadBytes, badMessages, connections: wss.clients.size, totalConnections }),
    close: () =>
      new Promise<void>((resolve) => {
        eld.disable();
        for (const c of wss.clients) c.terminate();
        wss.close();
        server.close(() => resolve());
      }),
  };
}

// The CLI glue below runs in a child process in the tests (coverage is not collected there).
/* c8 ignore start */
async function main(): Promise<void> {
  const port = Number(process.env.PORT ?? process.argv[2] ?? 8090);
  const host = process.env.HOST ?? '0.0.0.0';
  const s = await startBareServer(port, host);
  console.log(`bare-ws-server listening on ${host}:${s.port} pid ${process.pid}`);
  const shutdown = () => {
    void s.close().then(() => process.exit(0));
  };
  process.once('SIGTERM', shutdown);
  process.once('SIGINT', shutdown);
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  main().catch((err: unknown) => {
    console.error(err);
    process.exit(1);
  });
}
/* c8 ignore stop */
