// CPython's `random` module, the part the AdaptVis split needs (Mersenne Twister seeding, getrandbits and
// random.sample), so a tuning / test split drawn here is the authors' split item for item.

/** CPython's `random.Random` (MT19937), enough of it to draw `random.sample(range(n), k)` bit for bit. */
export class PythonRandom {
  private readonly mt = new Uint32Array(624);
  private mti = 625;

  /** `random.seed(seed)` for an integer seed (CPython hashes nothing for ints: abs(seed) in 32-bit words). */
  constructor(seed: number | bigint) {
    let n = typeof seed === 'bigint' ? seed : BigInt(seed);
    if (typeof seed === 'number' && !Number.isSafeInteger(seed)) throw new Error(`PythonRandom: seed must be an integer, got ${seed}`);
    if (n < 0n) n = -n;
    const key: number[] = [];
    do {
      key.push(Number(n & 0xffffffffn));
      n >>= 32n;
    } while (n > 0n);
    this.initByArray(key);
  }

  private initGenrand(s: number): void {
    const mt = this.mt;
    mt[0] = s >>> 0;
    for (let i = 1; i < 624; i++) {
      const prev = mt[i - 1]! ^ (mt[i - 1]! >>> 30);
      mt[i] = (Math.imul(1812433253, prev) + i) >>> 0;
    }
    this.mti = 624;
  }

  private initByArray(key: readonly number[]): void {
    const mt = this.mt;
    this.initGenrand(19650218);
    let i = 1;
    let j = 0;
    for (let k = Math.max(624, key.length); k > 0; k--) {
      const prev = mt[i - 1]! ^ (mt[i - 1]! >>> 30);
      mt[i] = ((mt[i]! ^ Math.imul(prev, 1664525)) + key[j]! + j) >>> 0;
      i++;
      j++;
      if (i >= 624) {
        mt[0] = mt[623]!;
        i = 1;
      }
      if (j >= key.length) j = 0;
    }
    for (let k = 623; k > 0; k--) {
      const prev = mt[i - 1]! ^ (mt[i - 1]! >>> 30);
      mt[i] = ((mt[i]! ^ Math.imul(prev, 1566083941)) - i) >>> 0;
      i++;
      if (i >= 624) {
        mt[0] = mt[623]!;
        i = 1;
      }
    }
    mt[0] = 0x80000000;
  }

  /** The next 32-bit output (genrand_uint32). */
  nextUint32(): number {
    const mt = this.mt;
    if (this.mti >= 624) {
      for (let kk = 0; kk < 624; kk++) {
        const y = (mt[kk]! & 0x80000000) | (mt[(kk + 1) % 624]! & 0x7fffffff);
        mt[kk] = mt[(kk + 397) % 624]! ^ (y >>> 1) ^ (y & 1 ? 0x9908b0df : 0);
      }
      this.mti = 0;
    }
    let y = mt[this.mti++]!;
    y ^= y >>> 11;
    y = (y ^ ((y << 7) & 0x9d2c5680)) >>> 0;
    y = (y ^ ((y << 15) & 0xefc60000)) >>> 0;
    y ^= y >>> 18;
    return y >>> 0;
  }

  /** `getrandbits(k)` for 0 <= k <= 32. */
  getrandbits(k: number): number {
    if (!Number.isInteger(k) || k < 0 || k > 32) throw new Error(`getrandbits: k must be an integer in [0, 32], got ${k}`);
    if (k === 0) return 0;
    return this.nextUint32() >>> (32 - k);
  }

  /** `_randbelow(n)` (the getrandbits rejection loop) for 1 <= n < 2^32. */
  randbelow(n: number): number {
    if (!Number.isInteger(n) || n < 1 || n >= 2 ** 32) throw new Error(`randbelow: n must be an integer in [1, 2^32), got ${n}`);
    const k = 32 - Math.clz32(n); // n.bit_length()
    let r = this.getrandbits(k);
    while (r >= n) r = this.getrandbits(k);
    return r;
  }

  /** `random.sample(range(n), k)`, in the order CPython returns it. */
  sampleRange(n: number, k: number): number[] {
    if (!Number.isInteger(n) || n < 0 || n >= 2 ** 32) throw new Error(`sample: n must be an integer in [0, 2^32), got ${n}`);
    if (!Number.isInteger(k) || k < 0 || k > n) throw new Error(`sample: k must be an integer in [0, ${n}], got ${k}`);
    const result: number[] = [];
    let setsize = 21;
    if (k > 5) setsize += 4 ** Math.ceil(Math.log(k * 3) / Math.log(4));
    if (n <= setsize) {
      const pool = Array.from({ length: n }, (_, i) => i);
      for (let i = 0; i < k; i++) {
        const j = this.randbelow(n - i);
        result.push(pool[j]!);
        pool[j] = pool[n - i - 1]!;
      }
    } else {
      const selected = new Set<number>();
      for (let i = 0; i < k; i++) {
        let j = this.randbelow(n);
        while (selected.has(j)) j = this.randbelow(n);
        selected.add(j);
        result.push(j);
      }
    }
    return result;
  }
}
