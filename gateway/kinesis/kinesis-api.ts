// The few Kinesis calls the consumer makes, on the AWS SDK v3 (signing, retries of transient
// errors, credentials: the SDK's). Credentials: the source's access key when configured, else
// the standard AWS chain; with a role ARN, that role is assumed through STS (ExternalId,
// RoleSessionName) and its temporary credentials are refreshed by the SDK before they expire.
import {
  GetRecordsCommand, GetShardIteratorCommand, KinesisClient, ListShardsCommand,
  type _Record, type Shard, type ShardIteratorType,
} from '@aws-sdk/client-kinesis';
import { fromTemporaryCredentials } from '@aws-sdk/credential-providers';
import { NodeHttpHandler } from '@smithy/node-http-handler';
import type { KinesisSettings } from './kinesis-config.js';

export type { _Record as KinesisRecord, Shard };

export interface ShardPosition {
  type: ShardIteratorType;
  seq?: string;
  /** AT_TIMESTAMP, ms */
  at?: number;
}

export interface KinesisApi {
  listShards(): Promise<Shard[]>;
  iterator(shardId: string, pos: ShardPosition): Promise<string | null>;
  records(iterator: string, limit: number): Promise<{ records: _Record[]; next: string | null; millisBehind: number | null }>;
  close(): void;
}

/** A role session name when none is configured: 2..64 of [\w+=,.@-]. */
export function defaultSessionName(nodeId: string): string {
  return `twilio-recorder-${nodeId.replace(/[^\w+=,.@-]/g, '-')}`.slice(0, 64);
}

export function createKinesisApi(k: KinesisSettings, nodeId: string): KinesisApi {
  const base = k.accessKeyId !== null && k.secretAccessKey !== null
    ? { accessKeyId: k.accessKeyId, secretAccessKey: k.secretAccessKey }
    : undefined;
  const credentials = k.roleArn === null ? base : fromTemporaryCredentials({
    masterCredentials: base,
    params: {
      RoleArn: k.roleArn,
      RoleSessionName: k.roleSessionName ?? defaultSessionName(nodeId),
      ...(k.externalId === null ? {} : { ExternalId: k.externalId }),
      DurationSeconds: 3600,
    },
    clientConfig: { region: k.region },
  });
  const client = new KinesisClient({
    region: k.region,
    ...(k.endpoint === null ? {} : { endpoint: k.endpoint }),
    ...(credentials === undefined ? {} : { credentials }),
    // polling GetRecords over HTTP/1.1: the client's default HTTP/2 handler is for
    // SubscribeToShard, which this consumer does not use (and which custom endpoints rarely speak)
    requestHandler: new NodeHttpHandler({ connectionTimeout: 5000, requestTimeout: 15_000 }),
    maxAttempts: 2,
  });
  const stream = { StreamName: k.streamName };
  return {
    async listShards() {
      const shards: Shard[] = [];
      let token: string | undefined;
      do {
        const r = await client.send(new ListShardsCommand(token === undefined ? stream : { NextToken: token }));
        shards.push(...(r.Shards ?? []));
        token = r.NextToken;
      } while (token !== undefined);
      return shards;
    },
    async iterator(shardId, pos) {
      const r = await client.send(new GetShardIteratorCommand({
        ...stream, ShardId: shardId, ShardIteratorType: pos.type,
        ...(pos.seq === undefined ? {} : { StartingSequenceNumber: pos.seq }),
        ...(pos.at === undefined ? {} : { Timestamp: new Date(pos.at) }),
      }));
      return r.ShardIterator ?? null;
    },
    async records(iterator, limit) {
      const r = await client.send(new GetRecordsCommand({ ShardIterator: iterator, Limit: limit }));
      return { records: r.Records ?? [], next: r.NextShardIterator ?? null, millisBehind: r.MillisBehindLatest ?? null };
    },
    close() {
      client.destroy();
    },
  };
}
