// Position bookkeeping for Qwen2-VL / Qwen2.5-VL, pure CPU functions:
// - the vision tower's 2-D rotary positions and (cos, sin) table (modeling_qwen2_vl.py `rot_pos_emb`,
//   `VisionRotaryEmbedding`),
// - Qwen2.5-VL's window partition (modeling_qwen2_5_vl.py `get_window_index` + `unique_consecutive` in the forward),
// - the decoder's 3-axis M-RoPE positions (modeling_qwen2_vl.py `get_rope_index`) and (cos, sin) table
//   (`Qwen2VLRotaryEmbedding` + `apply_multimodal_rotary_pos_emb`).
// All tables use the layout of kernels/rope.ts: [rows, headDim/2, 2] with entry j rotating dims j and j + headDim/2.

import { inverseFrequencies } from '../rotary.js';

export type Grid = readonly [number, number, number];

function checkGrid(grid: Grid, mergeSize: number, what: string): void {
  const [t, h, w] = grid;
  if (![t, h, w].every((v) => Number.isInteger(v) && v > 0)) {
    throw new Error(`${what}: grid (t, h, w) must be positive integers, got (${t}, ${h}, ${w})`);
  }
  if (!Number.isInteger(mergeSize) || mergeSize < 1) throw new Error(`${what}: mergeSize must be a positive integer, got ${mergeSize}`);
  if (h % mergeSize !== 0 || w % mergeSize !== 0) {
    throw new Error(`${what}: grid (${t}, ${h}, ${w}) has h or w not divisible by mergeSize ${mergeSize}`);
  }
}

/**
 * (row, col) of every patch in the processor's patch order (merge blocks row-major, row-major inside a block),
 * repeated for each of the t frames: Int32Array of pairs [row0, col0, row1, col1, ...]. HF `rot_pos_emb` hpos/wpos.
 */
export function visionRotaryPositions(grid: Grid, mergeSize: number): Int32Array {
  checkGrid(grid, mergeSize, 'visionRotaryPositions');
  const [t, h, w] = grid;
  const m = mergeSize;
  const out = new Int32Array(t * h * w * 2);
  let n = 0;
  for (let tt = 0; tt < t; tt++) {
    for (let bh = 0; bh < h / m; bh++) {
      for (let bw = 0; bw < w / m; bw++) {
        for (let mh = 0; mh < m; mh++) {
          for (let mw = 0; mw < m; mw++, n++) {
            out[2 * n] = bh * m + mh;
            out[2 * n + 1] = bw * m + mw;
          }
        }
      }
    }
  }
  return out;
}

/**
 * Vision rotary (cos, sin) table [patches, headDim/2, 2] from (row, col) pairs. HF VisionRotaryEmbedding(dim =
 * headDim/2) has headDim/4 frequencies 1/theta^(2i/(headDim/2)); entries j < headDim/4 use row * invFreq[j], the
 * rest col * invFreq[j - headDim/4] (HF: cat(hpos freqs, wpos freqs), then cat(x, x) over the head dim).
 * Angles and trigonometry in float64, stored as f32.
 */
export function visionRotaryTable(positions: ArrayLike<number>, headDim: number, theta = 10000): Float32Array {
  if (!Number.isInteger(headDim) || headDim < 4 || headDim % 4 !== 0) {
    throw new Error(`visionRotaryTable: headDim must be a positive multiple of 4, got ${headDim}`);
  }
  if (positions.length % 2 !== 0) throw new Error(`visionRotaryTable: positions must be (row, col) pairs, got ${positions.length} values`);
  const invFreq = inverseFrequencies(headDim / 2, theta);
  const q = headDim / 4;
  const half = headDim / 2;
  const rows = positions.length / 2;
  const out = new Float32Array(rows * half * 2);
  for (let r = 0; r < rows; r++) {
    const row = positions[2 * r]!;
    const col = positions[2 * r + 1]!;
    for (let j = 0; j < half; j++) {
      const angle = j < q ? row * invFreq[j]! : col * invFreq[j - q]!;
      out[(r * half + j) * 2] = Math.cos(angle);
      out[(r * half + j) * 2 + 1] = Math.sin(angle);
    }
  }
  return out;
}

function mergerWindowSize(windowSize: number, mergeSize: number, patchSize: number, what: string): number {
  if (![windowSize, mergeSize, patchSize].every((v) => Number.isInteger(v) && v > 0)) {
    throw new Error(`${what}: windowSize, mergeSize and patchSize must be positive integers, got ${windowSize}, ${mergeSize}, ${patchSize}`);
  }
  // vit_merger_window_size = window_size // spatial_merge_size // patch_size
  const vw = Math.floor(Math.floor(windowSize / mergeSize) / patchSize);
  if (vw < 1) throw new Error(`${what}: window_size ${windowSize} is smaller than one merged token (${mergeSize}*${patchSize} pixels)`);
  return vw;
}

/**
 * Windows of one image as lists of merged-token indices (local to the image), in HF order: per frame, windows
 * row-major over the merged grid padded up with `vw - n % vw` (a whole empty window when already divisible),
 * tokens row-major inside a window. Empty windows are kept so callers can mirror the raw HF list.
 */
function imageWindows(grid: Grid, mergeSize: number, vw: number): number[][] {
  const [t, h, w] = grid;
  const lh = h / mergeSize;
  const lw = w / mergeSize;
  const nh = (lh + vw - (lh % vw)) / vw;
  const nw = (lw + vw - (lw % vw)) / vw;
  const windows: number[][] = [];
  for (let tt = 0; tt < t; tt++) {
    for (let wy = 0; wy < nh; wy++) {
      for (let wx = 0; wx < nw; wx++) {
        const win: number[] = [];
        for (let y = wy * vw; y < Math.min((wy + 1) * vw, lh); y++) {
          for (let x = wx * vw; x < Math.min((wx + 1) * vw, lw); x++) win.push((tt * lh + y) * lw + x);
        }
        windows.push(win);
      }
    }
  }
  return windows;
}

/**
 * Qwen2.5-VL `get_window_index` (modeling_qwen2_5_vl.py) followed by the forward's `unique_consecutive`:
 * `windowIndex` lists merged-token indices (offset across images) in window order; `cuWindowSeqlens` are the
 * cumulative window lengths in patches (mergeSize^2 per merged token) with empty windows removed.
 */
export function windowIndex(
  grids: readonly Grid[],
  mergeSize: number,
  windowSize: number,
  patchSize: number,
): { windowIndex: Int32Array; cuWindowSeqlens: number[] } {
  const vw = mergerWindowSize(windowSize, mergeSize, patchSize, 'windowIndex');
  const unit = mergeSize * mergeSize;
  const index: number[] = [];
  const cu: number[] = [0];
  let offset = 0;
  for (const grid of grids) {
    checkGrid(grid, mergeSize, 'windowIndex');
    for (const win of imageWindows(grid, mergeSize, vw)) {
      for (const k of win) index.push(k + offset);
      const next = cu[cu.length - 1]! + win.length * unit;
      if (next !== cu[cu.length - 1]) cu.push(next); // unique_consecutive drops the empty windows
    }
    offset += (grid[0] * grid[1] * grid[2]) / unit;
  }
  return { windowIndex: Int32Array.from(index), cuWindowSeqlens: cu };
}

/**
 * For each patch in patch (processor) order, the number of its window, counted over the non-empty windows of all
 * images in order (= the chunk of `cuWindowSeqlens` it falls in after HF's reorder).
 */
export function windowOfPatch(grids: readonly Grid[], mergeSize: number, windowSize: number, patchSize: number): Int32Array {
  const vw = mergerWindowSize(windowSize, mergeSize, patchSize, 'windowOfPatch');
  const unit = mergeSize * mergeSize;
  let total = 0;
  for (const g of grids) {
    checkGrid(g, mergeSize, 'windowOfPatch');
    total += g[0] * g[1] * g[2];
  }
  const out = new Int32Array(total);
  let offset = 0; // merged tokens before this image
  let win = 0;
  for (const grid of grids) {
    for (const tokens of imageWindows(grid, mergeSize, vw)) {
      if (tokens.length === 0) continue;
      for (const k of tokens) out.fill(win, (offset + k) * unit, (offset + k + 1) * unit);
      win++;
    }
    offset += (grid[0] * grid[1] * grid[2]) / unit;
  }
  return out;
}

export interface RopeIndexOptions {
  imageTokenId: number;
  visionStartTokenId: number;
  mergeSize: number;
}

/**
 * HF `get_rope_index` (modeling_qwen2_vl.py) for a prompt with images (no attention mask: every token counts).
 * An image is `<|vision_start|>` directly followed by its run of image tokens, matched to `grids` in order; its
 * tokens get (t, h, w) = start + (t, row, col) over the (t, h/merge, w/merge) grid, where start = the text position
 * the first image token would have had; text after an image resumes at max + 1. Frames use t_index = t as Qwen2-VL
 * does (Qwen2.5-VL scales t by second_per_grid_t * tokens_per_second for videos and gets 0 for images; the two agree
 * for the grid_t = 1 of every image). ropeDeltas = max(position) + 1 - ids.length, the offset of decode positions.
 */
export function ropeIndex(
  ids: readonly number[],
  grids: readonly Grid[],
  o: RopeIndexOptions,
): { positions: [Int32Array, Int32Array, Int32Array]; ropeDeltas: number } {
  const L = ids.length;
  const pt = new Int32Array(L);
  const ph = new Int32Array(L);
  const pw = new Int32Array(L);

  // Locate the images and check their token counts against the grids.
  const starts: number[] = [];
  for (let i = 0; i + 1 < L; i++) {
    if (ids[i] === o.visionStartTokenId && ids[i + 1] === o.imageTokenId) starts.push(i + 1);
  }
  if (starts.length !== grids.length) {
    throw new Error(`ropeIndex: found ${starts.length} images (<|vision_start|> + image token) in the ids but got ${grids.length} image grids`);
  }
  let inRuns = 0;
  const llmGrids = grids.map((g, i) => {
    checkGrid(g, o.mergeSize, `ropeIndex: image ${i}`);
    const lg: [number, number, number] = [g[0], g[1] / o.mergeSize, g[2] / o.mergeSize];
    const want = lg[0] * lg[1] * lg[2];
    let run = 0;
    while (starts[i]! + run < L && ids[starts[i]! + run] === o.imageTokenId) run++;
    if (run !== want) {
      throw new Error(
        `ropeIndex: image ${i} has ${run} image tokens after <|vision_start|> (index ${starts[i]! - 1}) but its grid (${g.join(', ')}) needs ${want}`,
      );
    }
    inRuns += run;
    return lg;
  });
  const total = ids.reduce((n, id) => n + (id === o.imageTokenId ? 1 : 0), 0);
  if (total !== inRuns) {
    throw new Error(`ropeIndex: ${total - inRuns} of the ${total} image tokens do not follow a <|vision_start|> token`);
  }

  let st = 0; // next token index to place
  let next = 0; // st_idx: max of the positions so far + 1
  const text = (from: number, to: number): void => {
    for (let i = from; i < to; i++) pt[i] = ph[i] = pw[i] = next + (i - from);
    next += to - from;
  };
  llmGrids.forEach(([gt, gh, gw], i) => {
    const ed = starts[i]!;
    text(st, ed);
    const base = next;
    let k = ed;
    for (let t = 0; t < gt; t++) {
      for (let y = 0; y < gh; y++) {
        for (let x = 0; x < gw; x++, k++) {
          pt[k] = base + t;
          ph[k] = base + y;
          pw[k] = base + x;
        }
      }
    }
    next = base + Math.max(gt, gh, gw);
    st = ed + gt * gh * gw;
  });
  text(st, L);
  return { positions: [pt, ph, pw], ropeDeltas: next - L };
}

/**
 * M-RoPE (cos, sin) table [rows, headDim/2, 2] for kernels/rope.ts: frequency j = 1/theta^(2j/headDim) is driven by
 * the t position for j < s0, h for s0 <= j < s0+s1 and w after (HF splits cat(freqs, freqs) by mrope_section*2 and
 * takes axis i % 3 for chunk i, which is this per frequency). Float64 angles, stored as f32. Rows whose three
 * positions are equal give exactly the 1-D rotaryTable.
 */
export function mropeTable(
  positions: readonly [ArrayLike<number>, ArrayLike<number>, ArrayLike<number>],
  headDim: number,
  theta: number,
  mropeSection: readonly number[],
): Float32Array {
  const half = headDim / 2;
  if (mropeSection.length !== 3 || !mropeSection.every((s) => Number.isInteger(s) && s >= 0)) {
    throw new Error(`mropeTable: mrope_section must be 3 non-negative integers, got [${mropeSection.join(', ')}]`);
  }
  const [s0, s1, s2] = mropeSection as [number, number, number];
  if (s0 + s1 + s2 !== half) {
    throw new Error(`mropeTable: mrope_section [${mropeSection.join(', ')}] sums to ${s0 + s1 + s2}, expected headDim/2 = ${half}`);
  }
  const invFreq = inverseFrequencies(headDim, theta);
  const [pt, ph, pw] = positions;
  const rows = pt.length;
  if (ph.length !== rows || pw.length !== rows) {
    throw new Error(`mropeTable: the t, h, w positions differ in length (${rows}, ${ph.length}, ${pw.length})`);
  }
  const out = new Float32Array(rows * half * 2);
  for (let r = 0; r < rows; r++) {
    for (let j = 0; j < half; j++) {
      const pos = j < s0 ? pt[r]! : j < s0 + s1 ? ph[r]! : pw[r]!;
      const angle = pos * invFreq[j]!;
      out[(r * half + j) * 2] = Math.cos(angle);
      out[(r * half + j) * 2 + 1] = Math.sin(angle);
    }
  }
  return out;
}
