// Vision-token enhancement (see ../axis-probe.ts for the method and where it differs from the authors' code).
// Listings and the sweep: both option orders per item, the enhancement spec, alphas, the oracle and the controls.

import type { VlmModel } from '../../models/vlm.js';
import type { ImageInput, VlmProcessor } from '../../models/model.js';
import type { RgbImage } from '../../io/image.js';
import type { Tokenizer } from '../../io/tokenizer.js';
import { loadImageFile } from '../../io/image.js';
import { EMPTY_INTERVENTIONS, type InterventionSpec } from '../../spec/spec.js';
import type { Relation } from '../../eval/synthetic.js';
import { AXES, type Axis, AXIS_LABELS, type AxisItem, axisOf, type Listing, listingPrompt, LISTINGS, type PromptStyle, loadItemImage } from './items.js';
import { CAPTURE_LOGITS, type ImageSource } from './pooling.js';
import { type AxisProbes, columns, randomDirections } from './probe.js';

/** Both listings of one item at one setting: the decoded argmax token (trimmed, lowercased) and whether it is right. */
export interface ListingResult {
  pred: Record<Listing, string>;
  ok: Record<Listing, boolean>;
}

export interface ItemBaseline extends ListingResult {
  id: string;
  axis: Axis;
  relation: Relation;
}

interface Prepared {
  pixels: ImageInput;
  ids: Record<Listing, number[]>;
}

async function prepare(model: VlmModel, processor: VlmProcessor, item: AxisItem, style: PromptStyle, load: (p: string) => Promise<RgbImage>): Promise<Prepared> {
  const img = await loadItemImage(item, load);
  const pixels = model.preprocess(img);
  const ids = {} as Record<Listing, number[]>;
  for (const l of LISTINGS) ids[l] = processor.encodeText(processor.formatPrompt(listingPrompt(item, l, style), 1), [pixels]).ids;
  return { pixels, ids };
}

/** The argmax next token after the prompt, decoded as the authors do (skip special tokens, trim, lowercase). */
async function predict(model: VlmModel, tokenizer: Tokenizer, ids: number[], pixels: ImageInput, interventions?: InterventionSpec): Promise<string> {
  const r = await model.run({ ids, pixelValues: [pixels], interventions, capture: CAPTURE_LOGITS });
  const l = r.logits!.data;
  let best = 0;
  for (let k = 1; k < l.length; k++) if (l[k]! > l[best]!) best = k;
  return tokenizer.decode([best], { skipSpecialTokens: true }).trim().toLowerCase();
}

/** vision_token_add with the two columns of W at strength alpha (no intervention at alpha 0). */
export function enhancementSpec(W: ArrayLike<number>, alpha: number): InterventionSpec | undefined {
  if (alpha === 0) return undefined;
  return { ...EMPTY_INTERVENTIONS, visionTokenAdd: { alpha, directions: columns(W) } };
}

export interface ListingOptions extends ImageSource {
  prompt?: PromptStyle;
  onProgress?: (done: number, total: number) => void;
}

/** Every item in both option orders with no intervention (the sweep's alpha 0, and the "golden" test). */
export async function evaluateListings(model: VlmModel, tokenizer: Tokenizer, items: readonly AxisItem[], opts: ListingOptions = {}): Promise<ItemBaseline[]> {
  const processor = model.createProcessor(tokenizer);
  const load = opts.loadImage ?? loadImageFile;
  const out: ItemBaseline[] = [];
  for (const item of items) {
    const p = await prepare(model, processor, item, opts.prompt ?? 'synthetic', load);
    const pred = {} as Record<Listing, string>;
    const ok = {} as Record<Listing, boolean>;
    for (const l of LISTINGS) {
      pred[l] = await predict(model, tokenizer, p.ids[l], p.pixels);
      ok[l] = pred[l] === item.relation;
    }
    out.push({ id: item.id, axis: axisOf(item.relation), relation: item.relation, pred, ok });
    opts.onProgress?.(out.length, items.length);
  }
  return out;
}

const isGolden = (b: ListingResult) => b.ok.lr && b.ok.rl;
const isValid = (b: ItemBaseline, l: Listing) => (AXIS_LABELS[b.axis] as readonly string[]).includes(b.pred[l]);

export const SWEEP_SCOPES = ['failures', 'all'] as const;
export type SweepScope = (typeof SWEEP_SCOPES)[number];

export const DEFAULT_ALPHAS: readonly number[] = Array.from({ length: 16 }, (_, i) => i);
export const DEFAULT_RANDOM_SEEDS: readonly number[] = [0, 1, 2];

export interface SweepOptions extends ListingOptions {
  probes: AxisProbes;
  /** Default 0..15; alpha 0 (the baseline) is always evaluated and listed first. */
  alphas?: readonly number[];
  /** Seeds of the random-direction controls (default 0, 1, 2). */
  randomSeeds?: readonly number[];
  /** "failures" (default, the authors'): replay only the failed listings of failed items; "all": every item, both listings. */
  scope?: SweepScope;
  /** Leave out items with an out-of-axis baseline answer, as the authors' `clean_results` (default: they count as failures). */
  dropInvalid?: boolean;
  /** Baseline listings already computed for these items (same order, same prompt style), e.g. by the golden filter. */
  baseline?: readonly ItemBaseline[];
  onSweepProgress?: (p: { phase: 'baseline' | 'sweep'; done: number; total: number; label: string }) => void;
}

export interface Count {
  correct: number;
  total: number;
  accuracy: number;
}

export interface SweepRow {
  alpha: number;
  /** Strict both-listings accuracy (scope failures: golden items counted as still right, plus the fixed ones). */
  strict: Count;
  byAxis: Partial<Record<Axis, Count>>;
  /** Baseline failures whose every failed listing is right at this alpha, of `failures`. */
  fixed: number;
  failures: number;
  /** Scope all: baseline-correct items no longer strictly right (scope failures: null, not measured). */
  broken: number | null;
}

export interface DirectionSweep {
  rows: SweepRow[];
  /** The alpha > 0 with the most fixes (the first on ties) and its row; null without an alpha > 0. */
  best: SweepRow | null;
  /** Failures fixed at some alpha > 0 (the per-item oracle, "Probe*" / "Random*"). */
  oracleFixed: number;
}

export interface SweepItemLog {
  id: string;
  axis: Axis;
  relation: Relation;
  baseline: ListingResult;
  /** Scope failures: the listings replayed. */
  failedListings: Listing[];
  /** Alphas > 0 at which the probe fixes the item (baseline failures only). */
  probeFixedAt: number[];
  randomFixedAt: number[][];
}

export interface SweepResult {
  scope: SweepScope;
  prompt: PromptStyle;
  alphas: number[];
  randomSeeds: number[];
  /** Items swept, per axis; items of an axis without a probe and (dropInvalid) invalid ones are left out. */
  items: number;
  byAxis: Partial<Record<Axis, number>>;
  skipped: { noProbe: string[]; invalid: string[] };
  baseline: {
    strict: Count;
    failures: { lrOnly: number; rlOnly: number; both: number };
    /** Out-of-axis answers over both listings of the swept items. */
    invalidListings: number;
  };
  probe: DirectionSweep;
  random: ({ seed: number } & DirectionSweep)[];
  /** Per alpha over the random seeds: mean and sample std of the strict accuracy, mean fixes. */
  randomMean: { alpha: number; accuracyMean: number; accuracyStd: number; fixedMean: number }[];
  log: SweepItemLog[];
}

const count = (correct: number, total: number): Count => ({ correct, total, accuracy: total > 0 ? correct / total : 0 });

/** Alphas with 0 first, distinct, each a finite number >= 0. */
export function normalizeAlphas(alphas: readonly number[]): number[] {
  for (const a of alphas) if (!Number.isFinite(a) || a < 0) throw new Error(`alphas must be finite numbers >= 0, got ${a}`);
  return [0, ...[...new Set(alphas)].filter((a) => a !== 0)];
}

/**
 * The enhancement sweep: every item asked in both option orders with the axis probe's columns as vision_token_add
 * directions at each alpha, and the same with random unit-norm directions per seed (see ../axis-probe.ts). Alpha 0 is the
 * plain evaluation (no intervention), shared by all directions.
 */
export async function enhancementSweep(model: VlmModel, tokenizer: Tokenizer, allItems: readonly AxisItem[], opts: SweepOptions): Promise<SweepResult> {
  const scope = opts.scope ?? 'failures';
  const style = opts.prompt ?? 'synthetic';
  const alphas = normalizeAlphas(opts.alphas ?? DEFAULT_ALPHAS);
  const amp = alphas.slice(1);
  const seeds = [...(opts.randomSeeds ?? DEFAULT_RANDOM_SEEDS)];
  const D = model.hiddenSize;
  for (const axis of AXES) {
    const p = opts.probes[axis];
    if (p && p.D !== D) throw new Error(`the ${axis} probe has ${p.D} weights per class, but the model's text hidden size is ${D}`);
  }
  if (opts.baseline && opts.baseline.length !== allItems.length) throw new Error(`baseline has ${opts.baseline.length} items, expected ${allItems.length}`);

  const noProbe: string[] = [];
  const kept: { item: AxisItem; index: number }[] = [];
  allItems.forEach((item, index) => (opts.probes[axisOf(item.relation)] ? kept.push({ item, index }) : noProbe.push(item.id)));
  const progress = opts.onSweepProgress;

  // Alpha 0: plain evaluation of both listings.
  let base: ItemBaseline[];
  if (opts.baseline) base = kept.map((k) => opts.baseline![k.index]!);
  else {
    base = await evaluateListings(model, tokenizer, kept.map((k) => k.item), {
      ...opts,
      onProgress: (done, total) => progress?.({ phase: 'baseline', done, total, label: 'alpha 0' }),
    });
  }
  base.forEach((b, i) => {
    if (b.id !== kept[i]!.item.id) throw new Error(`baseline item ${i} is ${b.id}, expected ${kept[i]!.item.id}`);
  });
  const invalid: string[] = [];
  const swept: { item: AxisItem; base: ItemBaseline }[] = [];
  kept.forEach((k, i) => {
    const b = base[i]!;
    if (opts.dropInvalid && LISTINGS.some((l) => !isValid(b, l))) invalid.push(k.item.id);
    else swept.push({ item: k.item, base: b });
  });

  const directions: { label: string; W: Record<Axis, ArrayLike<number> | undefined> }[] = [
    { label: 'probe', W: { horizontal: opts.probes.horizontal?.W, vertical: opts.probes.vertical?.W } },
    ...seeds.map((s) => ({ label: `random seed ${s}`, W: randomDirections(D, s) as Record<Axis, ArrayLike<number> | undefined> })),
  ];
  const listingsOf = (b: ItemBaseline): Listing[] => (scope === 'all' ? [...LISTINGS] : LISTINGS.filter((l) => !b.ok[l]));
  const todo = new Set(swept.filter((s) => scope === 'all' || !isGolden(s.base)));
  const total = [...todo].reduce((n, s) => n + listingsOf(s.base).length, 0) * amp.length * directions.length;
  let done = 0;
  const processor = model.createProcessor(tokenizer);
  const load = opts.loadImage ?? loadImageFile;

  // results[direction][item][alpha index > 0] = the listing results at that alpha (only the replayed listings).
  const results: Map<number, Partial<ListingResult>[]>[] = directions.map(() => new Map());
  for (const [t, s] of swept.entries()) {
    if (!todo.has(s)) continue;
    const p = await prepare(model, processor, s.item, style, load);
    const ls = listingsOf(s.base);
    for (const [d, dir] of directions.entries()) {
      const W = dir.W[s.base.axis]!;
      const perAlpha: Partial<ListingResult>[] = [];
      for (const alpha of amp) {
        const r: Partial<ListingResult> = { pred: {} as Record<Listing, string>, ok: {} as Record<Listing, boolean> };
        for (const l of ls) {
          const pred = await predict(model, tokenizer, p.ids[l], p.pixels, enhancementSpec(W, alpha));
          r.pred![l] = pred;
          r.ok![l] = pred === s.item.relation;
          done++;
          progress?.({ phase: 'sweep', done, total, label: `${dir.label} alpha ${alpha}` });
        }
        perAlpha.push(r);
      }
      results[d]!.set(t, perAlpha);
    }
  }

  const failures = swept.filter((s) => !isGolden(s.base)).length;
  const axesPresent = AXES.filter((a) => swept.some((s) => s.base.axis === a));
  const baseStrict = swept.filter((s) => isGolden(s.base)).length;
  const log: SweepItemLog[] = swept.map((s) => ({
    id: s.item.id,
    axis: s.base.axis,
    relation: s.item.relation,
    baseline: { pred: s.base.pred, ok: s.base.ok },
    failedListings: LISTINGS.filter((l) => !s.base.ok[l]),
    probeFixedAt: [],
    randomFixedAt: seeds.map(() => []),
  }));

  const sweepOf = (d: number): DirectionSweep => {
    const rows: SweepRow[] = [];
    const oracle = new Set<number>();
    for (const [ai, alpha] of alphas.entries()) {
      let correct = 0;
      let fixed = 0;
      let broken = 0;
      const axisCorrect = new Map<Axis, number>();
      for (const [t, s] of swept.entries()) {
        const golden = isGolden(s.base);
        let strictOk: boolean;
        let isFixed = false;
        if (ai === 0) strictOk = golden;
        else {
          const r = results[d]!.get(t)?.[ai - 1];
          if (scope === 'failures') {
            isFixed = !golden && LISTINGS.every((l) => s.base.ok[l] || r!.ok![l]!);
            strictOk = golden || isFixed;
          } else {
            strictOk = r!.ok!.lr! && r!.ok!.rl!;
            isFixed = !golden && LISTINGS.every((l) => s.base.ok[l] || r!.ok![l]!);
            if (golden && !strictOk) broken++;
          }
          if (isFixed) {
            fixed++;
            oracle.add(t);
            (d === 0 ? log[t]!.probeFixedAt : log[t]!.randomFixedAt[d - 1]!).push(alpha);
          }
        }
        if (strictOk) {
          correct++;
          axisCorrect.set(s.base.axis, (axisCorrect.get(s.base.axis) ?? 0) + 1);
        }
      }
      const byAxis: Partial<Record<Axis, Count>> = {};
      for (const a of axesPresent) byAxis[a] = count(axisCorrect.get(a) ?? 0, swept.filter((s) => s.base.axis === a).length);
      rows.push({ alpha, strict: count(correct, swept.length), byAxis, fixed, failures, broken: ai === 0 ? 0 : scope === 'all' ? broken : null });
    }
    let best: SweepRow | null = null;
    for (const r of rows.slice(1)) if (best === null || r.fixed > best.fixed) best = r;
    return { rows, best, oracleFixed: oracle.size };
  };

  const probe = sweepOf(0);
  const random = seeds.map((seed, i) => ({ seed, ...sweepOf(i + 1) }));
  const randomMean = alphas.map((alpha, ai) => {
    const accs = random.map((r) => r.rows[ai]!.strict.accuracy);
    const mean = accs.reduce((a, b) => a + b, 0) / Math.max(1, accs.length);
    const std = accs.length > 1 ? Math.sqrt(accs.reduce((a, b) => a + (b - mean) ** 2, 0) / (accs.length - 1)) : 0;
    return { alpha, accuracyMean: mean, accuracyStd: std, fixedMean: random.reduce((n, r) => n + r.rows[ai]!.fixed, 0) / Math.max(1, random.length) };
  });
  const byAxis: Partial<Record<Axis, number>> = {};
  for (const a of axesPresent) byAxis[a] = swept.filter((s) => s.base.axis === a).length;
  return {
    scope,
    prompt: style,
    alphas,
    randomSeeds: seeds,
    items: swept.length,
    byAxis,
    skipped: { noProbe, invalid },
    baseline: {
      strict: count(baseStrict, swept.length),
      failures: {
        lrOnly: swept.filter((s) => !s.base.ok.lr && s.base.ok.rl).length,
        rlOnly: swept.filter((s) => s.base.ok.lr && !s.base.ok.rl).length,
        both: swept.filter((s) => !s.base.ok.lr && !s.base.ok.rl).length,
      },
      invalidListings: swept.reduce((n, s) => n + LISTINGS.filter((l) => !isValid(s.base, l)).length, 0),
    },
    probe,
    random,
    randomMean,
    log,
  };
}

/** Items both of whose listings the baseline answers right (what the authors train the probes on). */
export function goldenItems(items: readonly AxisItem[], baseline: readonly ItemBaseline[]): AxisItem[] {
  return items.filter((_, i) => isGolden(baseline[i]!));
}
