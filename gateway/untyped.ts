// Reading values whose shape nothing has checked yet (parsed JSON, a request before its schema
// ran, a body the cluster router forwards for any route): narrowed here, never cast.

/** A plain JSON object (not null, not an array). */
export const isObject = (v: unknown): v is Record<string, unknown> =>
  typeof v === 'object' && v !== null && !Array.isArray(v);

/** `v[key]` when `v` is an object, else undefined. */
export function fieldOf(v: unknown, key: string): unknown {
  return isObject(v) ? v[key] : undefined;
}

/** `v[key]` when it is a string, else undefined. */
export function stringFieldOf(v: unknown, key: string): string | undefined {
  const f = fieldOf(v, key);
  return typeof f === 'string' ? f : undefined;
}
