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
