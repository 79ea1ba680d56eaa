// One progress line on a terminal, shared by the commands' bars (loading, eval, collect, ablate): redrawn at most
// 10 times a second (and always at the end), erased when done; nothing at all when the stream is not a TTY (pipes,
// files, tests), so machine-read output stays clean.

export interface ProgressLine {
  /**
   * Redraw with `done` of `total` units: `text` gets the 24-character bar, the rate (units per second since the
   * start, not counting the `baseline` units already done then) and the ETA in seconds, and returns the line.
   */
  draw(done: number, total: number, text: (bar: string, rate: number, eta: number) => string): void;
  /** Erase the line if anything was drawn. */
  done(): void;
}

const BAR_WIDTH = 24;

export function progressLine(stream: NodeJS.WriteStream, baseline = 0): ProgressLine | null {
  if (!stream.isTTY) return null;
  const t0 = performance.now();
  let last = 0;
  let drawn = false;
  return {
    draw(done, total, text) {
      const now = performance.now();
      if (now - last < 100 && done < total) return;
      last = now;
      const s = (now - t0) / 1000;
      const rate = s > 0 ? (done - baseline) / s : 0;
      const eta = rate > 0 ? (total - done) / rate : 0;
      const bar = '#'.repeat(Math.round((total > 0 ? done / total : 1) * BAR_WIDTH)).padEnd(BAR_WIDTH, '.');
      stream.write(`\r\x1b[K${text(bar, rate, eta)}`);
      drawn = true;
    },
    done() {
      if (drawn) stream.write('\r\x1b[K');
    },
  };
}
