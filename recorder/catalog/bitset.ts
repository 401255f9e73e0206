// A set of small non-negative integers, one bit each: the SQLite catalog's reconcile marks the
// rowids it found on disk here. A million recordings take 125 KB (a temporary table of their ids
// took tens of MB and a random b-tree insert per id).
export class BitSet {
  #bits = new Uint8Array(1024);

  add(n: number): void {
    const byte = n >>> 3;
    if (byte >= this.#bits.length) {
      const grown = new Uint8Array(Math.max(byte + 1, this.#bits.length * 2));
      grown.set(this.#bits);
      this.#bits = grown;
    }
    this.#bits[byte]! |= 1 << (n & 7); // byte < length after growing
  }

  has(n: number): boolean {
    const byte = n >>> 3;
    return byte < this.#bits.length && (this.#bits[byte]! & (1 << (n & 7))) !== 0; // byte < length
  }
}
