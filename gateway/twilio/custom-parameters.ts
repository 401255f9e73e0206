// start.customParameters -> what the sidecar keeps. Metadata never costs audio (contract §7):
// any size, any characters, any count is accepted; only what would bloat every sidecar, index
// entry and webhook is clipped, with a visible marker so nobody mistakes it for the full value.
// Pure and run once per stream (never per frame).

/** longest key kept (the API's ids are at most 256 characters too) */
export const MAX_KEY_CHARS = 256;
/** longest value kept */
export const MAX_VALUE_CHARS = 1024;
/** keys + values kept per stream; parameters beyond are counted in one marker entry */
export const MAX_TOTAL_CHARS = 32 * 1024;
/** the entry that says how many parameters did not fit */
export const OVERFLOW_KEY = '…';

export interface CleanParameters {
  params: Record<string, string>;
  /** keys or values shortened, and parameters left out (0: kept as sent) */
  clipped: number;
}

/** `s` cut to `max` characters plus a marker naming what was cut (never splits a surrogate pair). */
export function clip(s: string, max: number): string {
  if (s.length <= max) return s;
  let cut = max;
  const c = s.charCodeAt(cut - 1);
  if (c >= 0xd800 && c <= 0xdbff) cut--;
  return `${s.slice(0, cut)}…[clipped ${s.length - cut} chars]`;
}

function text(v: unknown): string {
  if (typeof v === 'string') return v;
  if (v === undefined) return '';
  try {
    // eslint-disable-next-line @typescript-eslint/no-unnecessary-condition, @typescript-eslint/no-base-to-string -- JSON.stringify gives undefined for some values despite its type; the rest are primitives
    return typeof v === 'object' ? JSON.stringify(v) ?? '' : String(v);
  } catch {
    return String(v); // eslint-disable-line @typescript-eslint/no-base-to-string -- an object JSON refused (cycle, BigInt): its tag is all there is to show
  }
}

export function cleanCustomParameters(raw: unknown): CleanParameters {
  // defineProperty: a key such as "__proto__" is kept as data, never becomes a prototype
  const params: Record<string, string> = {};
  const put = (k: string, v: string) => Object.defineProperty(params, k, { value: v, enumerable: true, writable: true, configurable: true });
  if (raw === undefined || raw === null) return { params, clipped: 0 };
  if (typeof raw !== 'object' || Array.isArray(raw)) {
    put('customParameters', clip(text(raw), MAX_VALUE_CHARS));
    return { params, clipped: 1 };
  }
  let clipped = 0;
  let total = 0;
  let left = 0;
  for (const [rawKey, rawValue] of Object.entries(raw as Record<string, unknown>)) {
    let key = clip(rawKey, MAX_KEY_CHARS);
    const value = clip(text(rawValue), MAX_VALUE_CHARS);
    if (total + key.length + value.length > MAX_TOTAL_CHARS) {
      left++;
      continue;
    }
    if (key !== rawKey || value !== rawValue) clipped++;
    // two long keys that clip to the same text stay two entries
    for (let n = 2; Object.prototype.hasOwnProperty.call(params, key); n++) key = `${clip(rawKey, MAX_KEY_CHARS)}#${n}`;
    put(key, value);
    total += key.length + value.length;
  }
  if (left > 0) {
    let key = OVERFLOW_KEY;
    while (Object.prototype.hasOwnProperty.call(params, key)) key += '…';
    put(key, `[clipped ${left} more parameters]`);
    clipped += left;
  }
  return { params, clipped };
}
