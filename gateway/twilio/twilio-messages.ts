// Twilio Media Streams messages (docs/twilio-media-streams.md §1) as TypeBox schemas, compiled
// once into fast checkers. Extra fields are allowed: Twilio adds fields without notice.
// Counters and times are strings on the wire; they must be decimal digits.
import { Type, type Static } from '@sinclair/typebox';
import { TypeCompiler } from '@sinclair/typebox/compiler';
import { STREAM_SID_RE } from '../../recorder/storage-layout.js';
import { MAX_PAYLOAD_BYTES } from '../../recorder/ingest-limits.js';

const Digits = Type.String({ pattern: '^[0-9]{1,15}$' });
const TrackName = Type.Union([Type.Literal('inbound'), Type.Literal('outbound')]);
/** streamSid becomes a file name: MZ + 32 hex, a UUID or another path-safe id (storage-layout.ts). */
const StreamSid = Type.String({ pattern: STREAM_SID_RE.source });

/** Largest decoded payload accepted: the recorder's limit (its journal buffer is sized by it). */
export { MAX_PAYLOAD_BYTES };

export const ConnectedMessage = Type.Object({
  event: Type.Literal('connected'),
  protocol: Type.Optional(Type.String()),
  version: Type.Optional(Type.String()),
});

export const StartMessage = Type.Object({
  event: Type.Literal('start'),
  sequenceNumber: Digits,
  streamSid: StreamSid,
  start: Type.Object({
    accountSid: Type.String({ pattern: '^AC[0-9a-f]{32}$' }),
    callSid: Type.String({ pattern: '^CA[0-9a-f]{32}$' }),
    streamSid: Type.Optional(StreamSid),
    tracks: Type.Array(TrackName, { minItems: 1, maxItems: 2, uniqueItems: true }),
    // Metadata never refuses a call: any shape is taken, cleaned and clipped (custom-parameters.ts).
    customParameters: Type.Optional(Type.Unknown()),
    mediaFormat: Type.Object({
      encoding: Type.Literal('audio/x-mulaw'),
      sampleRate: Type.Literal(8000),
      channels: Type.Literal(1),
    }),
  }),
});

export const MediaMessage = Type.Object({
  event: Type.Literal('media'),
  sequenceNumber: Type.Optional(Digits),
  streamSid: Type.String(),
  media: Type.Object({
    track: TrackName,
    chunk: Type.Optional(Digits),
    timestamp: Digits,
    // base64 of MAX_PAYLOAD_BYTES
    payload: Type.String({ minLength: 1, maxLength: Math.ceil(MAX_PAYLOAD_BYTES / 3) * 4 }),
  }),
});

export const DtmfMessage = Type.Object({
  event: Type.Literal('dtmf'),
  streamSid: Type.String(),
  dtmf: Type.Object({ track: Type.Optional(Type.String()), digit: Type.String({ maxLength: 1 }) }),
});

export const MarkMessage = Type.Object({
  event: Type.Literal('mark'),
  streamSid: Type.String(),
  mark: Type.Object({ name: Type.String() }),
});

export const StopMessage = Type.Object({
  event: Type.Literal('stop'),
  streamSid: Type.String(),
  stop: Type.Optional(Type.Object({ accountSid: Type.Optional(Type.String()), callSid: Type.Optional(Type.String()) })),
});

export type ConnectedMessage = Static<typeof ConnectedMessage>;
export type StartMessage = Static<typeof StartMessage>;
export type MediaMessage = Static<typeof MediaMessage>;
export type DtmfMessage = Static<typeof DtmfMessage>;
export type MarkMessage = Static<typeof MarkMessage>;
export type StopMessage = Static<typeof StopMessage>;

export type TwilioMessage =
  | ConnectedMessage | StartMessage | MediaMessage | DtmfMessage | MarkMessage | StopMessage;
export type TwilioEvent = TwilioMessage['event'];

/** One compiled checker per event: adding an event here without a checker is a compile error. */
export const checkers: { [E in TwilioEvent]: { Check(v: unknown): boolean; Errors(v: unknown): Iterable<{ path: string; message: string }> } } = {
  connected: TypeCompiler.Compile(ConnectedMessage),
  start: TypeCompiler.Compile(StartMessage),
  media: TypeCompiler.Compile(MediaMessage),
  dtmf: TypeCompiler.Compile(DtmfMessage),
  mark: TypeCompiler.Compile(MarkMessage),
  stop: TypeCompiler.Compile(StopMessage),
};
