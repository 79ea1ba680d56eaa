// Commander option parsers shared by the commands: a bad value becomes commander's one-line usage error
// ("option '--k <k>' argument 'x' is invalid. expected a positive integer").

import { InvalidArgumentError } from 'commander';

/** An integer >= `min`; `what` completes "expected ..." in the error. */
export function intArg(min: number, what: string) {
  return (v: string): number => {
    const n = Number(v);
    if (v.trim() === '' || !Number.isInteger(n) || n < min) throw new InvalidArgumentError(`expected ${what}`);
    return n;
  };
}

/** A finite number accepted by `ok`; `what` completes "expected ..." in the error. */
export function numberArg(what: string, ok: (n: number) => boolean) {
  return (v: string): number => {
    const n = Number(v);
    if (v.trim() === '' || !Number.isFinite(n) || !ok(n)) throw new InvalidArgumentError(`expected ${what}`);
    return n;
  };
}

const BYTE_UNITS: Record<string, number> = { '': 1, b: 1, k: 2 ** 10, kib: 2 ** 10, m: 2 ** 20, mib: 2 ** 20, g: 2 ** 30, gib: 2 ** 30, t: 2 ** 40, tib: 2 ** 40 };

/** A positive byte count: an integer, or a number with a binary unit (512MiB, 8GiB, 1.5G). */
export function bytesArg(v: string): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*$/i.exec(v);
  const unit = m ? BYTE_UNITS[m[2].toLowerCase()] : undefined;
  const n = m && unit !== undefined ? Math.floor(Number(m[1]) * unit) : NaN;
  if (!Number.isSafeInteger(n) || n < 1) throw new InvalidArgumentError('expected a byte count, e.g. 500000000, 512MiB or 8GiB');
  return n;
}
