// Process entry: configuration from the environment (exit 78 on a bad setting, one line),
// start the node, drain on SIGTERM/SIGINT. Run `node` on this file directly in containers:
// npm does not pass SIGTERM on.
import { loadConfig, ConfigError, redactConfig } from './config.js';
import { buildGateway } from './server.js';

const EX_CONFIG = 78;

async function main(): Promise<void> {
  let config;
  try {
    config = loadConfig(process.env);
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`config error: ${err.message}\n`);
      process.exit(EX_CONFIG);
    }
    throw err;
  }
  const gw = await buildGateway(config);
  gw.log.info({ config: redactConfig(config) }, 'configuration');
  if (!config.sources.some((s) => s.authToken !== null)) {
    gw.log.warn('no TWILIO_AUTH_TOKEN configured: unsigned streams are accepted');
  }
  const port = await gw.listen();
  gw.log.info({ port, host: config.host }, 'gateway listening');

  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) return;
    stopping = true;
    gw.log.info({ signal, drainTimeoutS: config.drainTimeoutS }, 'draining');
    gw.drain().then(
      () => { gw.log.info('drained, exiting'); process.exit(0); },
      (err: Error) => { gw.log.error({ err: err.message }, 'drain failed'); process.exit(1); },
    );
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
}

main().catch((err: Error) => {
  process.stderr.write(`fatal: ${err.stack ?? err.message}\n`);
  process.exit(1);
});
