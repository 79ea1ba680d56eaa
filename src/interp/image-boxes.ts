// Boxes on an image and the image tokens inside them, shared by the knockout experiment (knockout.ts) and the
// axis probes of vision-token enhancement (axis-probe/pooling.ts).

/** [x0, y0, x1, y1] in pixels of an image or of the model's view of it. */
export type Box = [number, number, number, number];

/**
 * Image tokens whose cell centre lies in `box` (view pixels, edges included), sorted: token r * cols + c of a
 * `grid` = [rows, cols] raster over a view of `size`.
 */
export function tokensInBox(grid: readonly [number, number], size: { width: number; height: number }, box: Box): number[] {
  const [rows, cols] = grid;
  const out: number[] = [];
  for (let r = 0; r < rows; r++) {
    const cy = ((r + 0.5) * size.height) / rows;
    if (cy < box[1] || cy > box[3]) continue;
    for (let c = 0; c < cols; c++) {
      const cx = ((c + 0.5) * size.width) / cols;
      if (cx >= box[0] && cx <= box[2]) out.push(r * cols + c);
    }
  }
  return out;
}
