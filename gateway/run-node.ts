// The process around a gateway node: configuration from the environment (exit 78 on a bad
// setting, one line), build, listen, drain on SIGTERM/SIGINT. main.ts runs it as is; tools that
// need a node with an extra route (loadtest/cluster-node.ts) pass `prepare`.
import { loadConfigOrExit, ConfigError, EX_CONFIG, redactConfig } from './config.js';
import { buildGateway, type Gateway, type GatewayOptions } from './server.js';
import { startupWarnings } from './startup-warnings.js';


export interface RunNodeOptions {
  gatewayOptions?: GatewayOptions;
  /** called after the node is built and before it listens (routes must exist before listen) */
  prepare?: (gw: Gateway) => void;
}

export async function runNode(o: RunNodeOptions = {}): Promise<Gateway> {
  const config = loadConfigOrExit(process.env);
  let gw: Gateway;
  try {
    gw = await buildGateway(config, o.gatewayOptions);
  } catch (err) {
    // settings that can only be checked against the machine (e.g. ffmpeg for ARCHIVE_FORMAT)
    if (err instanceof ConfigError) {
      process.stderr.write(`config error: ${err.message}\n`);
      process.exit(EX_CONFIG);
    }
    throw err;
  }
  gw.log.info({ config: redactConfig(config) }, 'configuration');
  for (const warning of startupWarnings(config)) gw.log.warn(warning);
  o.prepare?.(gw);
  const port = await gw.listen();
  gw.log.info({ port, host: config.host }, 'gateway listening');

  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) return;
    stopping = true;
    gw.log.info({ signal, drainTimeoutS: config.drainTimeoutS }, 'draining');
    gw.drain().then(
      () => { gw.log.info('drained, exiting'); process.exit(0); },
      (err: Error) => { gw.log.error({ err }, 'drain failed'); process.exit(1); },
    );
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
  return gw;
}

/** Entry points end here on an unexpected failure. */
export function fatal(err: Error): never {
  process.stderr.write(`fatal: ${err.stack ?? err.message}\n`);
  process.exit(1);
}
