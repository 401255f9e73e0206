// How much garbage a stream may send before it is closed: more than `limit` bad messages within
// any `windowMs` (a sliding window). Bad messages interleaved with good ones still add up, unlike
// "N in a row". O(1) per bad message, nothing at all per good one; the ring of the last `limit`
// error times is allocated at a stream's first error.

export class ErrorBudget {
  private times: Float64Array | null = null;
  private next = 0;
  private count = 0;

  constructor(readonly limit: number, readonly windowMs: number) {
    if (!(limit >= 1) || !(windowMs > 0)) throw new RangeError('ErrorBudget needs limit >= 1 and windowMs > 0');
  }

  /** Count one bad message at `now` (ms, monotonic); true when the budget is exhausted. */
  spend(now: number): boolean {
    // The ring holds the times of the last `limit` errors: with this one that makes limit + 1,
    // too many when the oldest of them is still inside the window.
    const times = (this.times ??= new Float64Array(this.limit));
    const exhausted = this.count === this.limit && now - times[this.next]! < this.windowMs;
    times[this.next] = now;
    this.next = (this.next + 1) % this.limit;
    if (this.count < this.limit) this.count++;
    return exhausted;
  }
}
