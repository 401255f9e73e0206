// The validated, typed configuration every other module receives. Built by config.ts from the
// environment and the optional GATEWAY_CONFIG file; nothing else reads process.env.
// The per-account settings (SourceSettings) are the recorder's: recorder/source-settings.ts.
import type { AccountSettings, SourceSettings } from '../recorder/source-settings.js';
import type { KinesisSettings } from './kinesis/kinesis-config.js';

export interface DataSource extends AccountSettings {
  /** null: the source accepts unsigned streams (a warning is logged at start) */
  authToken: string | null;
  /** bearer keys that see and control only this source's calls and recordings */
  apiKeys: string[];
  /** agent events from an Amazon Kinesis stream (contract section 9); absent when not configured */
  kinesis?: KinesisSettings;
}

export interface GatewayConfig {
  port: number;
  host: string;
  recordingsDir: string;
  redisUrl: string | null;
  /** postgres://: the recording catalog in PostgreSQL, shared by the cluster; null = embedded SQLite */
  databaseUrl: string | null;
  nodeId: string;
  /** e.g. wss://lb.example.com/twilio/v1; null = derived from the request */
  websocketTargetUrl: string | null;
  drainTimeoutS: number;
  /** per segment writer, audio bytes that may wait for a slow disk before audio is dropped */
  writeQueueMaxBytes: number;
  /** WebSockets (started or not) this node holds; the upgrade beyond answers 503 */
  maxStreams: number;
  /** a WebSocket (or a plain connection) that has sent no start (no request) by then is closed */
  startTimeoutS: number;
  /** how far media.timestamp may run ahead of the stream's wall-clock age */
  maxTimestampLeadS: number;
  streamIdleTimeoutS: number;
  maintenanceIntervalS: number;
  apiKeys: string[];
  recordingWebhookUrl: string | null;
  recordingWebhookSecret: string | null;
  /** ffmpeg processes archiving at once */
  archiveConcurrency: number;
  /** false: the WAV is removed once its archive is verified */
  archiveKeepWav: boolean;
  logLevel: 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace' | 'silent';
  /** the global values, used for streams of an account when no source is configured */
  defaults: SourceSettings;
  /** configured accounts; empty = the embedded default (any accountSid is recorded) */
  sources: DataSource[];
}
