// What an operator must hear once at start: settings that are valid but leave a door open.
// Each is one warn line; none stops the process (they are legitimate for a lab or a sidecar).
import type { GatewayConfig } from './config-types.js';
import { isLoopbackAddress } from './api/api-auth.js';

function isLoopbackHost(host: string): boolean {
  const h = host.replace(/^\[|\]$/g, '').toLowerCase();
  return h === 'localhost' || isLoopbackAddress(h);
}

export function startupWarnings(config: GatewayConfig): string[] {
  const warnings: string[] = [];
  const signed = config.sources.some((s) => s.authToken !== null);
  if (!signed) warnings.push('no TWILIO_AUTH_TOKEN configured: unsigned streams are accepted');
  if (signed && config.websocketTargetUrl === null) {
    warnings.push('TWILIO_AUTH_TOKEN is set but WEBSOCKET_TARGET_URL is not: signatures are checked against the URL ' +
      'derived from each request (Host, X-Forwarded-Proto/Host), so any Host is accepted; set WEBSOCKET_TARGET_URL ' +
      'to the exact public wss:// URL Twilio dials');
  }
  if (config.apiKeys.length === 0 && !isLoopbackHost(config.host)) {
    warnings.push(`API_KEYS is not set: /v1/* answers loopback clients only, although HOST ${config.host} is reachable ` +
      'from the network; a relay on this machine that adds no X-Forwarded-For (socat, an SSH tunnel, a sidecar proxy) ' +
      'would expose the whole API to whoever reaches it; set API_KEYS');
  }
  return warnings;
}
