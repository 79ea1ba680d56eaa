// Activation patching per attention head (Meng et al. 2022; Wang et al. 2022; Zhang & Nanda, ICLR 2024; Heimersheim &
// Nanda 2024): which heads carry the answer of a clean input against a minimal counterfactual one (for a spatial
// question, the same scene with the two named objects swapped: src/eval/counterfactual.ts).
//
// Runs. (1) The counterfactual input, capturing every head's z (the output before o_proj) at the patched rows.
// (2) The clean input. (3) One run per swept (layer, head): the clean input with that head's z at the patched rows
// replaced by its counterfactual value (the patch_z intervention, a kernel input: no hook, no extra pass). That is
// the "noising" direction: the clean run gets one component of the counterfactual.
//
// Metric. LD = logit(answer) - logit(other) at the last prompt row, where `answer` is the first token of the clean
// answer and `other` that of the counterfactual answer (raw logits, before any softmax: the logit difference of
// Wang et al. and Zhang & Nanda, more linear in the activations than probabilities). Per head:
//   recovery = (LD_patched - LD_clean) / (LD_cf - LD_clean)
// 0: the head's counterfactual z moves nothing; 1: it alone moves the clean answer all the way to the counterfactual
// one (values beyond [0, 1] happen: overshoot, or the opposite direction). This is the fraction of the clean-to-
// counterfactual LD change one head's z brings about, what head-finding.md calls the noising "damage"
// (LD_clean - LD_patched) / (LD_clean - LD_cf): the same number. It is NaN when LD_cf = LD_clean (the pair does not
// move the answer).
//
// Why one head per run, and what is batched. Patching two heads in one run does not give their separate effects:
// later layers (attention, MLP) and the final norm are nonlinear in z, so the effects of two heads interact even in
// one layer; the exact sweep is one patched run per head, 2 + layers * heads runs in all (the organism: 2 + 4 * 8 =
// 34). What is exact and shared: a patched run computes the same as the clean run on every row before the first
// patched row, so it keeps the clean run's KV cache and image features for those rows (VlmModel.run's prefix reuse,
// firstPatchChange) and prefills only the rows from there on. At rows "last" that is one row per head, and those
// one-row runs are independent of each other given the prefix: they are done as the rows of one forward
// (VlmModel.runVariants: each row sees the prefix keys and itself only, at position L - 1, with its own head
// patched), `batch` variants per forward. So a full sweep at the last row is 2 + ceil(layers * heads / batch)
// forward passes (the organism: 3), with the numbers of the 2 + layers * heads separate runs. At other rows each
// head's run recomputes every row from the first patched one and has its own forward. The counterfactual z comes
// from one capture of every layer and head at once.

import type { VlmModel } from '../models/vlm.js';
import type { ImageInput } from '../models/model.js';
import type { Tokenizer } from '../io/tokenizer.js';
import { type PatchRows, type PatchZ, EMPTY_INTERVENTIONS, parseCapture, resolvePatchRows } from '../spec/spec.js';
import { sampleMean } from './statistics.js';

/** Heads' variants per forward in a last-row sweep (patchHeads' `batch`). */
export const DEFAULT_PATCH_BATCH = 256;

/** One input of a pair: token ids (image tokens expanded) and the preprocessed images. */
export interface PatchingInput {
  ids: number[];
  pixelValues: ImageInput[];
}

export interface PatchingOptions {
  /**
   * The first token of the clean answer and of the counterfactual answer (LD = logit(answer) - logit(other)).
   * Absent: the top token of the clean run's last row, and of the counterfactual run's (they must differ).
   */
  answer?: number;
  other?: number;
  /** Prompt rows whose z is patched (default "last"): "last", "all", or prompt positions. */
  rows?: PatchRows;
  /** Text layers and heads swept (default all). */
  layers?: readonly number[];
  heads?: readonly number[];
  /** Keep the clean prefix in patched runs (default true; false recomputes every row, for checking). */
  reuse?: boolean;
  /**
   * At rows "last" (with reuse): how many heads' variants one forward computes (default 256); false: one run per
   * head (the same numbers, for checking).
   */
  batch?: number | false;
  /** Called after each run with runs done and runs in all. */
  onProgress?: (done: number, total: number) => void;
}

export interface PatchingResult {
  /** Prompt positions patched. */
  rows: number[];
  layers: number[];
  heads: number[];
  answer: number;
  other: number;
  ldClean: number;
  ldCounterfactual: number;
  /** [layers.length][heads.length]: LD of the clean run with that head patched. */
  ldPatched: number[][];
  /** [layers.length][heads.length]: (LD_patched - LD_clean) / (LD_cf - LD_clean). */
  recovery: number[][];
  /** Forward passes made (2 + layers * heads, or at the last row batched 2 + ceil(layers * heads / batch)). */
  runs: number;
  /** Patched variants computed: layers * heads (each the equal of one separate patched run). */
  variants: number;
  /** Prompt rows prefilled in all. */
  prefilledRows: number;
  seconds: number;
}

/** A layer / head list checked against the tower; errors name the option and the index. */
function indexList(list: readonly number[] | undefined, count: number, what: 'layer' | 'head'): number[] {
  if (list === undefined) return Array.from({ length: count }, (_, i) => i);
  if (list.length === 0) throw new Error(`${what}s: the list is empty`);
  const seen = new Set<number>();
  for (const [i, x] of list.entries()) {
    if (!Number.isInteger(x) || x < 0 || x >= count) throw new Error(`${what}s[${i}]: ${what} ${x} does not exist (the text tower has ${what}s 0..${count - 1})`);
    if (seen.has(x)) throw new Error(`${what}s[${i}]: ${what} ${x} is listed twice`);
    seen.add(x);
  }
  return [...list];
}

function argmax(x: Float32Array): number {
  let best = 0;
  for (let i = 1; i < x.length; i++) if (x[i]! > x[best]!) best = i;
  return best;
}

/** LD at the last prompt row: logits [vocab] of the run's last row. */
const logitDiff = (logits: Float32Array, answer: number, other: number): number => logits[answer]! - logits[other]!;

/**
 * The per-head patching sweep of one clean / counterfactual pair (see the file comment). Both inputs must have the
 * same token layout (same length, image tokens at the same positions), as a minimal counterfactual does.
 */
export async function patchHeads(model: VlmModel, clean: PatchingInput, counterfactual: PatchingInput, opts: PatchingOptions): Promise<PatchingResult> {
  const t0 = performance.now();
  const { layers: nLayers, heads: nHeads, headDim: hd } = model.dims.text;
  const L = clean.ids.length;
  if (counterfactual.ids.length !== L) {
    throw new Error(`the clean prompt has ${L} tokens but the counterfactual one ${counterfactual.ids.length}; patching needs the same token layout in both`);
  }
  const img = model.imageTokenId;
  const moved = clean.ids.findIndex((id, i) => (id === img) !== (counterfactual.ids[i] === img));
  if (moved >= 0) throw new Error(`position ${moved} is an image token in one prompt and not in the other; patching needs the same token layout in both`);
  const vocab = model.vocabSize;
  for (const [k, t] of [['answer', opts.answer], ['other', opts.other]] as const) {
    if (t !== undefined && (!Number.isInteger(t) || t < 0 || t >= vocab)) throw new Error(`${k} token ${t} is outside the vocabulary (0..${vocab - 1})`);
  }
  if (opts.answer !== undefined && opts.answer === opts.other) throw new Error(`answer and other are the same token (${opts.answer}); the logit difference would be 0`);
  const layers = indexList(opts.layers, nLayers, 'layer');
  const heads = indexList(opts.heads, nHeads, 'head');
  const rowsSpec: PatchRows = opts.rows ?? 'last';
  const probe: PatchZ = { tower: 'text', layer: 0, head: 0, rows: rowsSpec, values: new Float32Array((rowsSpec === 'all' ? L : rowsSpec === 'last' ? 1 : rowsSpec.length) * hd) };
  const rows = resolvePatchRows(probe, L, hd, 'rows');
  const reuse = opts.reuse ?? true;
  const nVariants = layers.length * heads.length;
  const batch = opts.batch ?? DEFAULT_PATCH_BATCH;
  if (batch !== false && (!Number.isInteger(batch) || batch < 1)) throw new Error(`batch must be a positive integer or false, got ${batch}`);
  const batched = batch !== false && reuse && rows.length === 1 && rows[0] === L - 1;
  const total = 2 + (batched ? Math.ceil(nVariants / (batch as number)) : nVariants);
  let done = 0;
  const tick = () => opts.onProgress?.(++done, total);
  const before = model.counters.prefillRows;

  // (1) The counterfactual: z of every layer and head at the patched rows, [rows, layers, heads, hd] (or without the
  // rows axis for one row).
  const cf = await model.run({
    ...counterfactual,
    capture: parseCapture({ logits: 'last', z: { positions: rows } }, model.dims),
  });
  tick();
  const zCf = cf.z!.data;
  const cfValues = (l: number, h: number): Float32Array => {
    const out = new Float32Array(rows.length * hd);
    rows.forEach((_, j) => {
      const at = ((rows.length === 1 ? 0 : j * nLayers) + l) * nHeads * hd + h * hd;
      out.set(zCf.subarray(at, at + hd), j * hd);
    });
    return out;
  };

  // (2) The clean run: logits only, so that its KV cache and image features are a prefix the patched runs reuse (with
  // room for a batch of variants after the prompt).
  let prev = await model.run({ ...clean, capture: parseCapture({ logits: 'last' }, model.dims), ...(batched ? { reserveNewTokens: batch as number } : {}) });
  tick();
  const answer = opts.answer ?? argmax(prev.logits!.data);
  const other = opts.other ?? argmax(cf.logits!.data);
  if (answer === other) throw new Error(`the clean and the counterfactual run both predict token ${answer} first; give the answer and other tokens`);
  const ldCf = logitDiff(cf.logits!.data, answer, other);
  const ldClean = logitDiff(prev.logits!.data, answer, other);

  // (3) One run per head, or at the last row the heads' variants as the rows of few forwards.
  const ldPatched = layers.map(() => heads.map(() => NaN));
  const grid = layers.flatMap((l, li) => heads.map((h, hi) => ({ l, h, li, hi })));
  for (let k = 0; batched && k < grid.length; k += batch as number) {
    const chunk = grid.slice(k, k + (batch as number));
    const r = await model.runVariants({ ...clean, reuse: prev.prefix, variants: chunk.map(({ l, h }) => [{ layer: l, head: h, values: cfValues(l, h) }]) });
    const [, vocabSize] = r.shape;
    chunk.forEach(({ li, hi }, v) => (ldPatched[li]![hi] = logitDiff(r.data.subarray(v * vocabSize, (v + 1) * vocabSize), answer, other)));
    tick();
  }
  for (const { l, h, li, hi } of batched ? [] : grid) {
    const patch: PatchZ = { tower: 'text', layer: l, head: h, rows: rowsSpec === 'last' ? 'last' : rows, values: cfValues(l, h) };
    const r = await model.run({
      ...clean,
      interventions: { ...EMPTY_INTERVENTIONS, patchZ: [patch] },
      capture: parseCapture({ logits: 'last' }, model.dims),
      ...(reuse ? { reuse: prev.prefix } : {}),
    });
    if (reuse && !r.reuse?.reused) throw new Error(`patched run of layer ${l} head ${h} could not reuse the clean prefix: ${r.reuse?.reason ?? 'unknown reason'}`);
    prev = r;
    ldPatched[li]![hi] = logitDiff(r.logits!.data, answer, other);
    tick();
  }
  const span = ldCf - ldClean;
  const recovery = ldPatched.map((row) => row.map((ld) => (span === 0 ? NaN : (ld - ldClean) / span)));
  return {
    rows,
    layers,
    heads,
    answer,
    other,
    ldClean,
    ldCounterfactual: ldCf,
    ldPatched,
    recovery,
    runs: total,
    variants: nVariants,
    prefilledRows: model.counters.prefillRows - before,
    seconds: (performance.now() - t0) / 1000,
  };
}

/** Several pairs' sweeps (same layers and heads) combined. */
export interface PatchingSummary {
  layers: number[];
  heads: number[];
  pairs: number;
  /** Mean LDs over the pairs. */
  ldClean: number;
  ldCounterfactual: number;
  ldPatched: number[][];
  /** Recovery of the mean LDs: (mean LD_patched - mean LD_clean) / (mean LD_cf - mean LD_clean). */
  recovery: number[][];
  /** Mean over the pairs of each pair's own recovery (pairs with LD_cf = LD_clean left out). */
  meanRecovery: number[][];
  runs: number;
  variants: number;
  prefilledRows: number;
  seconds: number;
}

/**
 * Combines sweeps of several pairs. The headline number is the recovery of the mean LDs (a pair whose answer barely
 * moves cannot blow it up); the mean of per-pair recoveries comes beside it.
 */
export function summarizePatching(results: readonly PatchingResult[]): PatchingSummary {
  if (results.length === 0) throw new Error('summarizePatching: no results');
  const [first] = results as [PatchingResult];
  for (const r of results) {
    if (r.layers.join() !== first.layers.join() || r.heads.join() !== first.heads.join()) throw new Error('summarizePatching: the sweeps cover different layers or heads');
  }
  const n = results.length;
  const mean = (f: (r: PatchingResult) => number) => results.reduce((a, r) => a + f(r), 0) / n;
  const ldClean = mean((r) => r.ldClean);
  const ldCounterfactual = mean((r) => r.ldCounterfactual);
  const grid = <T>(f: (li: number, hi: number) => T) => first.layers.map((_, li) => first.heads.map((_, hi) => f(li, hi)));
  const ldPatched = grid((li, hi) => mean((r) => r.ldPatched[li]![hi]!));
  const span = ldCounterfactual - ldClean;
  const recovery = grid((li, hi) => (span === 0 ? NaN : (ldPatched[li]![hi]! - ldClean) / span));
  const meanRecovery = grid((li, hi) => {
    return sampleMean(results.map((r) => r.recovery[li]![hi]!).filter((x) => !Number.isNaN(x)));
  });
  return {
    layers: first.layers,
    heads: first.heads,
    pairs: n,
    ldClean,
    ldCounterfactual,
    ldPatched,
    recovery,
    meanRecovery,
    runs: results.reduce((a, r) => a + r.runs, 0),
    variants: results.reduce((a, r) => a + r.variants, 0),
    prefilledRows: results.reduce((a, r) => a + r.prefilledRows, 0),
    seconds: results.reduce((a, r) => a + r.seconds, 0),
  };
}

/**
 * The first token of `answer` as the model would generate it after the formatted prompt `prompt` (chat template or
 * family format, image placeholders as they are): the first id where the tokenization of prompt + answer departs
 * from the prompt's. A space separates them unless the prompt ends in whitespace ("ASSISTANT:" -> " left"; Qwen's
 * "assistant\n" -> "left"). Throws naming the answer when it adds no token.
 */
export function answerTokenId(tokenizer: Tokenizer, prompt: string, answer: string): number {
  const sep = /\s$/.test(prompt) ? '' : ' ';
  const base = tokenizer.encode(prompt);
  const full = tokenizer.encode(prompt + sep + answer);
  let i = 0;
  while (i < base.length && i < full.length && base[i] === full[i]) i++;
  if (i >= full.length) throw new Error(`answer "${answer}" adds no token after the prompt`);
  return full[i]!;
}
