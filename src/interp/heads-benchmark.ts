// The planted-head benchmark (issue 14; head-finding.md section 4): every head-finding method of the library runs on
// a model whose heads' jobs are declared (known_heads.json, src/interp/known-heads.ts), and each is scored by where it
// ranks the known heads, precision@k, and whether ablating its own top-k hurts the job more than k random heads.
//
// Data: a synthetic set (scripts/make-synthetic.ts: questions.jsonl with sub-questions, scenes.jsonl); with
// `--wordings all` it holds held-out wordings, which the selectivity probe splits on.
//
// Methods (src/interp/heads-benchmark-probes.ts, heads-benchmark-model.ts):
//   probe        CogVision linear probe accuracy   (fitProbes on collectActivations' z at the last prompt row)
//   selectivity  the probe with controls           (fitProbeControls; split by held-out wording when there is one)
//   mlp          the CogVSR MLP probe importance   (fitMlpProbes; epochs and batch size options, default the paper's)
//   patching     activation patching recovery      (patchHeads over N swapped-object pairs)
//   attention    attention mass from the last prompt row on the two named objects' image tokens
// The probe methods score a head per function; the functions are those the known heads' question_types point at
// (targetFunctions: a main type -> the function label of its main questions in the data, "sub:X" -> X), and a
// head's score is its best over them. Heads are ranked by the method's criteria, ties broken by the next criterion,
// then by a seeded order (per method), never by position (heads-benchmark-scoring.ts).
//
// Ablation: per method, its top-k heads (k = number of known heads) scaled by 0 against k random heads outside that
// set (randomHeads via planAblation, seeds 0..n-1), on the spatial main questions answered alone; the top-k accuracy
// is tested against the random-k accuracies with welchTTest (one value against n: the one-sample t). Runs of
// the same head set are made once (two methods with the same top-k share them) and the baseline once.

import type { GpuContext } from '../gpu/context.js';
import type { VlmModel } from '../models/vlm.js';
import type { Tokenizer } from '../io/tokenizer.js';
import type { RgbImage } from '../io/image.js';
import type { EvalItem } from '../eval/dataset.js';
import { evaluate } from '../eval/evaluate.js';
import type { SceneRecord } from '../eval/counterfactual.js';
import type { KnownHeads } from './known-heads.js';
import { collectActivations, collectDims, type CollectRow } from './collect.js';
import { isSpatialMain } from './knockout.js';
import { planAblation, DEFAULT_ABLATION_SEEDS } from './ablation.js';
import type { HeadRef } from './heads.js';
import { sampleMean, sampleStd, welchTTest } from './statistics.js';
import { type ScoreTable, probeDataFromRows, probeAccuracyScores, probeSelectivityScores, mlpImportanceScores, DEFAULT_BENCHMARK_SEEDS, DEFAULT_MLP_SEEDS } from './heads-benchmark-probes.js';
import { attentionScores, patchingScores, preparePairs } from './heads-benchmark-model.js';
import {
  type AblationSummary,
  type KnownHeadRank,
  type PrecisionAtK,
  type RankedHeadScore,
  type TargetSource,
  type Verdict,
  knownHeadRanks,
  methodSeed,
  precisionAtK,
  rankHeadScores,
  targetFunctions,
  verdict,
} from './heads-benchmark-scoring.js';

export const BENCHMARK_METHODS = ['probe', 'selectivity', 'mlp', 'patching', 'attention'] as const;
export type BenchmarkMethod = (typeof BENCHMARK_METHODS)[number];

export const METHOD_LABELS: Record<BenchmarkMethod, string> = {
  probe: 'CogVision linear probe (accuracy)',
  selectivity: 'linear probe with controls (selectivity)',
  mlp: 'CogVSR MLP probe (|grad x activation|)',
  patching: 'activation patching (recovery)',
  attention: 'attention mass on the named objects',
};

export const DEFAULT_PATCH_PAIRS = 8;

export interface BenchmarkProgress {
  /** "collect", "probe", "selectivity", "mlp", "patching", "attention", "ablation". */
  stage: string;
  done: number;
  total: number;
}

export interface HeadsBenchmarkOptions {
  /** Every question of the set (main questions and sub-questions, as readQuestions gives them). */
  items: readonly EvalItem[];
  /** scenes.jsonl records by scene id (parseSceneRecord). */
  scenes: ReadonlyMap<string, SceneRecord>;
  knownHeads: KnownHeads;
  /** Methods to run (default all, in BENCHMARK_METHODS order). */
  methods?: readonly BenchmarkMethod[];
  /** The k of precision@k (default: the number of known heads, 4 and 8, those within the head count). */
  ks?: readonly number[];
  /** Seeds of the linear probes' splits (default 0..4). */
  seeds?: readonly number[];
  /** Label permutations of the selectivity control (default 10). */
  permutations?: number;
  /** MLP probe seeds (default 0, 1, 2), epochs (default 100) and batch size (default 1). */
  mlpSeeds?: readonly number[];
  mlpEpochs?: number;
  mlpBatchSize?: number;
  /** Swapped-object pairs patched (default 8). */
  pairs?: number;
  /** Spatial questions the attention mass is averaged over (default all). */
  attentionQuestions?: number;
  /** Random-k draws of the ablation (default 5; 0 skips the ablation). */
  ablationSeeds?: number;
  /** Spatial questions of each ablation run (default all). */
  ablationQuestions?: number;
  /** Seed of the tie orders (default 0). */
  seed?: number;
  /** Pre-collected rows (collectActivations with pool last_prompt over `items`), to skip the collection. */
  rows?: readonly CollectRow[];
  /** GPU context for the linear probes' batched fit (null: the float64 CPU fit). */
  probeContext?: GpuContext | null;
  maxNewTokens?: number;
  eosTokenIds?: number[];
  loadImage?: (path: string) => Promise<RgbImage>;
  onProgress?: (p: BenchmarkProgress) => void;
}

export interface FunctionDetail {
  function: string;
  known: KnownHeadRank[];
  precision: PrecisionAtK[];
  separation?: string;
}

export interface AblationDetail extends AblationSummary {
  topHeads: HeadRef[];
  random: { seed: number; heads: HeadRef[]; accuracy: number }[];
  df: number;
  method: 'one_sample' | 'welch';
}

export interface MethodResult {
  method: BenchmarkMethod;
  label: string;
  ok: boolean;
  /** Why there is no result (ok false). */
  reason?: string;
  criteria: string[];
  settings: Record<string, unknown>;
  seconds: number;
  /** Every head, best first. */
  ranking: RankedHeadScore[];
  known: KnownHeadRank[];
  precision: PrecisionAtK[];
  /** Probe methods: each target function's own ranking of the known heads. */
  functions: FunctionDetail[];
  skipped: { function: string; reason: string }[];
  ablation: AblationDetail | null;
  verdict: Verdict;
}

export interface HeadsBenchmarkResult {
  layers: number;
  heads: number;
  known: { source: string; heads: { layer: number; head: number; role: string; function: string; questionTypes: string[] }[] };
  targets: { functions: string[]; sources: TargetSource[]; missing: string[] };
  ks: number[];
  seed: number;
  data: {
    questions: number;
    spatialQuestions: number;
    wordings: boolean;
    /** Collected rows per function: total and answered correctly. */
    collected: Record<string, { total: number; correct: number }>;
  };
  ablation: { k: number; seeds: number; questions: number; baseline: number; runs: number } | null;
  methods: MethodResult[];
  seconds: number;
}

/** The precision@k list: `ks` checked against the head count, or the default (known heads, 4, 8, within the count). */
export function benchmarkKs(ks: readonly number[] | undefined, known: number, total: number): number[] {
  if (ks) {
    if (ks.length === 0) throw new Error('ks: the list is empty');
    for (const k of ks) if (!Number.isInteger(k) || k < 1 || k > total) throw new Error(`k ${k} is out of range: precision@k needs an integer k in 1..${total} (the model's text heads)`);
    return [...new Set(ks)].sort((a, b) => a - b);
  }
  return [...new Set([known, 4, 8])].filter((k) => k <= total).sort((a, b) => a - b);
}

/** Runs the benchmark; see the file comment. */
export async function runHeadsBenchmark(model: VlmModel, tokenizer: Tokenizer, opts: HeadsBenchmarkOptions): Promise<HeadsBenchmarkResult> {
  const t0 = performance.now();
  const { layers: L, heads: H } = model.dims.text;
  const known = opts.knownHeads.heads;
  const vision = known.find((h) => h.tower !== 'text');
  if (vision) throw new Error(`known head ${vision.tower} L${vision.layer}H${vision.head}: the benchmark's methods score text heads only`);
  for (const h of known) if (h.layer >= L || h.head >= H) throw new Error(`known head L${h.layer}H${h.head} is outside the model's ${L} x ${H} text heads`);
  const knownRefs: HeadRef[] = known.map((h) => ({ layer: h.layer, head: h.head }));
  const n = knownRefs.length;
  const ks = benchmarkKs(opts.ks, n, L * H);
  const methods = opts.methods ? [...new Set(opts.methods)] : [...BENCHMARK_METHODS];
  for (const m of methods) if (!(BENCHMARK_METHODS as readonly string[]).includes(m)) throw new Error(`unknown method ${JSON.stringify(m)} (methods: ${BENCHMARK_METHODS.join(', ')})`);
  const seed = opts.seed ?? 0;
  const spatial = opts.items.filter(isSpatialMain);
  if (spatial.length === 0) throw new Error('the questions hold no spatial main question (type "spatial"): the patching, attention and ablation need them');
  const targets = targetFunctions(
    known.flatMap((h) => h.questionTypes),
    opts.items,
  );
  const progress = (stage: string) => (done: number, total: number) => opts.onProgress?.({ stage, done, total });

  // Activations for the probe methods: z at the last prompt row of every question (sub-questions chained).
  const probeMethods = methods.filter((m) => m === 'probe' || m === 'selectivity' || m === 'mlp');
  let rows: readonly CollectRow[] = opts.rows ?? [];
  if (probeMethods.length && !opts.rows) {
    rows = await collectActivations(model, tokenizer, opts.items, { pool: 'last_prompt', maxNewTokens: opts.maxNewTokens, eosTokenIds: opts.eosTokenIds, onExample: (_r, d, t) => progress('collect')(d, t) });
  }
  const collected: Record<string, { total: number; correct: number }> = {};
  for (const r of rows) {
    const c = (collected[r.function] ??= { total: 0, correct: 0 });
    c.total++;
    if (r.correct) c.correct++;
  }
  const data = probeMethods.length ? probeDataFromRows(rows, collectDims(model, {})) : null;
  const fit = (stage: string) => (p: { done: number; total: number }) => progress(stage)(p.done, p.total);

  const tables = new Map<BenchmarkMethod, { table?: ScoreTable; error?: string; seconds: number }>();
  for (const method of methods) {
    const ts = performance.now();
    try {
      if ((method === 'probe' || method === 'selectivity' || method === 'mlp') && targets.functions.length === 0) {
        throw new Error(`the known heads' question types (${targets.missing.join(', ')}) name no function of the data`);
      }
      let table: ScoreTable;
      const fns = targets.functions;
      if (method === 'probe') table = await probeAccuracyScores(opts.probeContext ?? null, data!, { functions: fns, seeds: opts.seeds, onProgress: fit(method) });
      else if (method === 'selectivity') table = await probeSelectivityScores(opts.probeContext ?? null, data!, { functions: fns, seeds: opts.seeds, permutations: opts.permutations, topK: n, onProgress: fit(method) });
      else if (method === 'mlp') table = mlpImportanceScores(data!, { functions: fns, seeds: opts.mlpSeeds, epochs: opts.mlpEpochs, batchSize: opts.mlpBatchSize, topK: n, onProgress: fit(method) });
      else if (method === 'patching') {
        const { pairs, skipped } = preparePairs(model, tokenizer, spatial, opts.scenes, opts.pairs ?? DEFAULT_PATCH_PAIRS);
        table = await patchingScores(model, pairs, { skipped, onProgress: progress(method) });
        delete (table as Partial<Awaited<ReturnType<typeof patchingScores>>>).results;
      } else table = await attentionScores(model, tokenizer, spatial, opts.scenes, { limit: opts.attentionQuestions, loadImage: opts.loadImage, onProgress: progress(method) });
      tables.set(method, { table, seconds: (performance.now() - ts) / 1000 });
    } catch (e) {
      tables.set(method, { error: (e as Error).message, seconds: (performance.now() - ts) / 1000 });
    }
  }

  const results: MethodResult[] = methods.map((method) => {
    const { table, error, seconds } = tables.get(method)!;
    const base = { method, label: METHOD_LABELS[method], seconds, ablation: null };
    if (!table) {
      return { ...base, ok: false, reason: error, criteria: [], settings: {}, ranking: [], known: [], precision: [], functions: [], skipped: [], verdict: verdict(METHOD_LABELS[method], null, null, null, 0.05, error) };
    }
    const s = methodSeed(seed, method);
    const ranking = rankHeadScores(table.grids, s);
    const functions = table.functions.map((f): FunctionDetail => {
      const r = rankHeadScores(f.grids, methodSeed(s, f.function));
      return { function: f.function, known: knownHeadRanks(r, knownRefs), precision: ks.map((k) => precisionAtK(r, knownRefs, k)), ...(f.separation ? { separation: f.separation } : {}) };
    });
    return {
      ...base,
      ok: true,
      criteria: table.criteria,
      settings: table.settings,
      ranking,
      known: knownHeadRanks(ranking, knownRefs),
      precision: ks.map((k) => precisionAtK(ranking, knownRefs, k)),
      functions,
      skipped: table.skipped,
      verdict: verdict(METHOD_LABELS[method], null, null, null),
    };
  });

  // Ablation of each method's top-k against random-k heads on the spatial questions.
  const nSeeds = opts.ablationSeeds ?? DEFAULT_ABLATION_SEEDS;
  if (!Number.isInteger(nSeeds) || nSeeds < 0) throw new Error(`ablationSeeds must be a non-negative integer, got ${nSeeds}`);
  let ablation: HeadsBenchmarkResult['ablation'] = null;
  const okResults = results.filter((r) => r.ok);
  if (nSeeds > 0 && okResults.length) {
    const questions = opts.ablationQuestions !== undefined ? spatial.slice(0, opts.ablationQuestions) : spatial;
    const fn = questions[0]!.function;
    const plans = okResults.map((r) => {
      const ranked = r.ranking.map(({ layer, head }) => ({ layer, head }));
      const plan = planAblation(model.dims, questions, { probes: { layers: L, heads: H, functions: [{ function: fn, ranking: ranked, top: ranked.slice(0, n) }] }, k: n, seeds: nSeeds, mode: 'scale', epsilon: 0 });
      return { r, target: plan.targets[0]! };
    });
    const key = (hs: readonly HeadRef[]) => hs.map((h) => `${h.layer}:${h.head}`).sort().join(',');
    const distinct = new Map<string, (typeof plans)[number]['target']['top']>();
    for (const { target } of plans) for (const run of [target.top, ...target.random]) if (!distinct.has(key(run.heads))) distinct.set(key(run.heads), run);
    const total = 1 + distinct.size;
    let done = 0;
    const run = async (interventions?: (typeof plans)[number]['target']['top']['spec']) => {
      const rep = await evaluate(model, tokenizer, questions, { interventions, maxNewTokens: opts.maxNewTokens, eosTokenIds: opts.eosTokenIds, onProgress: (d, t) => progress('ablation')(done * t + d, total * t) });
      done++;
      return rep.accuracy;
    };
    const baseline = await run();
    const acc = new Map<string, number>();
    for (const [k, r] of distinct) acc.set(k, await run(r.spec));
    for (const { r, target } of plans) {
      const top = acc.get(key(target.top.heads))!;
      const random = target.random.map((x) => ({ seed: x.seed!, heads: x.heads, accuracy: acc.get(key(x.heads))! }));
      const ra = random.map((x) => x.accuracy);
      const t = welchTTest([top], ra);
      r.ablation = { k: n, baseline, top, randomMean: sampleMean(ra), randomStd: sampleStd(ra), t: t.t, p: t.p, df: t.df, method: t.method, topHeads: target.top.heads, random };
    }
    ablation = { k: n, seeds: nSeeds, questions: questions.length, baseline, runs: total };
  }
  for (const r of results) {
    if (r.ok) r.verdict = verdict(r.label, r.known, r.precision.find((p) => p.k === n) ?? precisionAtK(r.ranking, knownRefs, n), r.ablation);
  }

  return {
    layers: L,
    heads: H,
    known: { source: opts.knownHeads.source, heads: known.map((h) => ({ layer: h.layer, head: h.head, role: h.role, function: h.function, questionTypes: h.questionTypes })) },
    targets,
    ks,
    seed,
    data: { questions: opts.items.length, spatialQuestions: spatial.length, wordings: opts.items.some((i) => i.wordingHeldout === true), collected },
    ablation,
    methods: results,
    seconds: (performance.now() - t0) / 1000,
  };
}

export { DEFAULT_BENCHMARK_SEEDS, DEFAULT_MLP_SEEDS };
