// The functional-heads ablation experiment (CogVision, arXiv 2512.10300; CogVSR, arXiv 2603.20662) and the probe
// rankings it reads (probes.json): it plans and runs baseline, top-k and random-k runs and compares their accuracies.
// The heads, store vectors, intervention specs and statistics it uses have their own files, which never import this one.

import type { VlmModel } from '../models/vlm.js';
import type { Tokenizer } from '../io/tokenizer.js';
import type { EvalItem } from '../eval/dataset.js';
import { evaluate, type Accuracy, type EvalOptions, type EvalReport } from '../eval/evaluate.js';
import type { InterventionSpec, ModelDims, QueryScope, Tower } from '../spec/spec.js';
import { type HeadRef, headKey, headName, randomHeads } from './heads.js';
import { type AblationStoreInput, type DirectionKind, type ProbeWeights, type SteeringDirection, asStore, meanVectors, steeringDirections } from './store-vectors.js';
import { type AblationMode, ABLATION_MODES, DEFAULT_STEER_ALPHA, buildIntervention } from './ablation-spec.js';
import { type TTestResult, sampleMean, sampleStd, welchTTest } from './statistics.js';

// For each target function f, the top-k functional heads of f (from `vlmscope probe`'s ranking) are masked,
// mean-ablated or steered (AblationMode, ablation-spec.ts), and the accuracy per function (and overall) is compared
// with the same intervention on k random heads drawn from outside f's functional heads, once per seed, and with no
// intervention at all (the baseline).
//
// Statistics. There is one top-k set per function, so one top-k accuracy, against n random-k accuracies (n seeds):
// welchTTest([top], random) (statistics.ts) treats the single top-k value as a constant, which makes it the
// one-sample t-test of the random-k mean against the top-k value, t = (top - mean_r) / (s_r / sqrt(n)), df = n - 1.

/** Random-k draws per target function unless told otherwise (seeds 0..4). */
export const DEFAULT_ABLATION_SEEDS = 5;

// ---------------------------------------------------------------------------------------------------------------
// Probes (the ranking of `vlmscope probe`)

export interface FunctionHeads {
  function: string;
  /** Every head, best first (at least k of them). */
  ranking: HeadRef[];
  /** The function's selected (functional) heads. */
  top: HeadRef[];
}

/** The rankings the experiments read: rankHeads' HeadRanking fits, as does probesFromJson's result. */
export interface AblationProbes {
  tower?: Tower | null;
  /** Grid size (default: the model's tower). */
  layers?: number;
  heads?: number;
  functions: readonly FunctionHeads[];
}

/** probes.json as `vlmscope probe` writes it ({tower, layers, heads, functions: {name: {ranking, top, ...}}}) -> AblationProbes. */
export function probesFromJson(json: unknown, source = 'probes.json'): AblationProbes {
  if (!json || typeof json !== 'object' || Array.isArray(json)) throw new Error(`${source} must hold a JSON object`);
  const o = json as Record<string, unknown>;
  const dim = (k: 'layers' | 'heads') => {
    const v = o[k];
    if (typeof v !== 'number' || !Number.isInteger(v) || v < 1) throw new Error(`${source}: "${k}" is ${JSON.stringify(v)}, expected a positive integer`);
    return v;
  };
  const layers = dim('layers');
  const heads = dim('heads');
  let tower: Tower | null = null;
  if (o.tower !== undefined && o.tower !== null) {
    if (o.tower !== 'text' && o.tower !== 'vision') throw new Error(`${source}: "tower" is ${JSON.stringify(o.tower)}, expected "text" or "vision"`);
    tower = o.tower;
  }
  const fns = o.functions;
  if (!fns || typeof fns !== 'object' || Array.isArray(fns) || Object.keys(fns).length === 0) {
    throw new Error(`${source}: "functions" must be a non-empty object of function name -> {ranking, top}`);
  }
  const headList = (v: unknown, where: string): HeadRef[] => {
    if (!Array.isArray(v)) throw new Error(`${where} must be a list of {layer, head}`);
    return v.map((x, i) => {
      const e = x as Record<string, unknown> | null;
      const l = e?.layer;
      const h = e?.head;
      if (typeof l !== 'number' || typeof h !== 'number' || !Number.isInteger(l) || !Number.isInteger(h) || l < 0 || l >= layers || h < 0 || h >= heads) {
        throw new Error(`${where}[${i}] is ${JSON.stringify(x)}, expected {"layer": 0..${layers - 1}, "head": 0..${heads - 1}}`);
      }
      return { layer: l, head: h };
    });
  };
  const functions = Object.entries(fns as Record<string, unknown>).map(([name, v]) => {
    const where = `${source}: functions[${JSON.stringify(name)}]`;
    if (!v || typeof v !== 'object' || Array.isArray(v)) throw new Error(`${where} must be an object with "ranking" and "top"`);
    const f = v as Record<string, unknown>;
    const ranking = headList(f.ranking, `${where}.ranking`);
    const top = headList(f.top, `${where}.top`);
    if (top.length === 0) throw new Error(`${where}.top is empty`);
    return { function: name, ranking, top };
  });
  return { tower, layers, heads, functions };
}

// ---------------------------------------------------------------------------------------------------------------
// The experiment

export interface AccuracyBreakdown {
  overall: Accuracy;
  byFunction: Record<string, Accuracy>;
}

export interface AblationRun {
  /** The heads intervened on. */
  heads: HeadRef[];
  /** For random-k runs: the seed of the draw (randomHeads(k, excluded, layers, heads, seed)). */
  seed?: number;
  accuracy: AccuracyBreakdown;
}

export interface AblationComparison {
  /** Accuracy (in [0, 1]) with no intervention. */
  baseline: number;
  /** With the function's top-k heads intervened on. */
  top: number;
  /** With k random heads, one value per seed. */
  random: number[];
  randomMean: number;
  /** Sample std (n - 1); NaN for one seed. */
  randomStd: number;
  /** welchTTest([top], random). */
  test: TTestResult;
}

export interface AblationTarget {
  function: string;
  k: number;
  /** Heads no random draw may take: the top-k heads and the function's selected heads. */
  excluded: HeadRef[];
  top: AblationRun;
  random: AblationRun[];
  /** The target function's own accuracy. */
  target: AblationComparison;
  overall: AblationComparison;
  /** Every function of the questions, the target included. */
  byFunction: Record<string, AblationComparison>;
}

/** The settings of an experiment, as planned and as reported. */
export interface AblationSettings {
  mode: AblationMode;
  tower: Tower;
  epsilon: number;
  alpha: number;
  queries: QueryScope;
  direction: DirectionKind;
  seeds: number[];
}

export interface AblationResult extends AblationSettings {
  /** Questions evaluated per run. */
  questions: number;
  baseline: AccuracyBreakdown;
  targets: AblationTarget[];
}

export interface AblationProgress {
  /** Runs finished before this one (0-based index of the current run) and the total. */
  run: number;
  runs: number;
  /** "baseline", "top-k <fn>" or "random-k <fn> seed <s>". */
  label: string;
  /** Questions done in this run, of total, and how many right. */
  done: number;
  total: number;
  correct: number;
}

export interface AblationOptions {
  probes: AblationProbes;
  /** Target functions (default: every function of the probes that has questions). */
  functions?: readonly string[];
  /** Heads per intervention (default: the size of each function's top set). */
  k?: number;
  /** Default "scale". */
  mode?: AblationMode;
  /** Mode "scale" (default 0). */
  epsilon?: number;
  /** Mode "steer" (default 0.1). */
  alpha?: number;
  /** Mode "steer": rows steered (default "all"). */
  queries?: QueryScope;
  /** Random-k draws, seeds 0..seeds-1 (default 5). */
  seeds?: number;
  /** Activations (vlmscope collect) for mean_ablate and steer. */
  store?: AblationStoreInput;
  /** Mode "steer": direction kind (default "mean_diff"). */
  direction?: DirectionKind;
  /** Mode "steer" with direction "probe": probe weights per function. */
  probeWeights?: Readonly<Record<string, ProbeWeights>>;
  /** Tower of the heads (default probes.tower, else "text"). */
  tower?: Tower;
  /** Evaluate only the first `limit` questions. */
  limit?: number;
  maxNewTokens?: number;
  eosTokenIds?: number[];
  onProgress?: (p: AblationProgress) => void;
  /** The scorer (default evaluate; tests pass a stand-in). */
  evaluate?: (model: VlmModel, tokenizer: Tokenizer, items: EvalItem[], opts: EvalOptions) => Promise<EvalReport>;
}

const breakdown = (r: EvalReport): AccuracyBreakdown => ({ overall: { total: r.total, correct: r.correct, accuracy: r.accuracy }, byFunction: r.byFunction });

function compare(baseline: AccuracyBreakdown, top: AccuracyBreakdown, random: AccuracyBreakdown[], pick: (b: AccuracyBreakdown) => Accuracy | undefined): AblationComparison {
  const acc = (b: AccuracyBreakdown) => pick(b)?.accuracy ?? NaN;
  const r = random.map(acc);
  return {
    baseline: acc(baseline),
    top: acc(top),
    random: r,
    randomMean: sampleMean(r),
    randomStd: sampleStd(r),
    test: welchTTest([acc(top)], r),
  };
}

/** One intervention run of a plan. */
export interface PlannedRun {
  /** "top-k <fn>" or "random-k <fn> seed <s>". */
  label: string;
  heads: HeadRef[];
  seed?: number;
  spec: InterventionSpec;
}

export interface PlannedTarget {
  function: string;
  k: number;
  excluded: HeadRef[];
  top: PlannedRun;
  random: PlannedRun[];
}

/** Everything runAblation will run, with every intervention spec built and checked (planAblation). */
export interface AblationPlan extends AblationSettings {
  /** The questions of every run (after limit). */
  questions: EvalItem[];
  targets: PlannedTarget[];
}

/**
 * Checks the options against the model's dims and the questions and plans the experiment: the target functions,
 * their top-k heads, the random draws (randomHeads(k, excluded, layers, heads, seed) for seeds 0..seeds-1, the
 * excluded heads being the top-k and the function's selected heads) and every intervention spec (means and
 * steering directions from the store). Needs no GPU: errors here are mistakes in the inputs.
 */
export function planAblation(dims: ModelDims, items: readonly EvalItem[], opts: AblationOptions): AblationPlan {
  const mode = opts.mode ?? 'scale';
  if (!ABLATION_MODES.includes(mode)) throw new Error(`mode must be one of ${ABLATION_MODES.join(', ')}, got ${JSON.stringify(mode)}`);
  const epsilon = opts.epsilon ?? 0;
  if (!Number.isFinite(epsilon)) throw new Error(`epsilon must be a finite number, got ${epsilon}`);
  const alpha = opts.alpha ?? DEFAULT_STEER_ALPHA;
  if (!Number.isFinite(alpha)) throw new Error(`alpha must be a finite number, got ${alpha}`);
  const queries = opts.queries ?? 'all';
  const directionKind = opts.direction ?? 'mean_diff';
  if (directionKind !== 'mean_diff' && directionKind !== 'probe') throw new Error(`direction must be "mean_diff" or "probe", got ${JSON.stringify(directionKind)}`);
  const nSeeds = opts.seeds ?? DEFAULT_ABLATION_SEEDS;
  if (!Number.isInteger(nSeeds) || nSeeds < 1) throw new Error(`seeds must be a positive integer, got ${nSeeds}`);
  const seeds = Array.from({ length: nSeeds }, (_, i) => i);
  if (opts.limit !== undefined && (!Number.isInteger(opts.limit) || opts.limit < 0)) throw new Error(`limit must be a non-negative integer, got ${opts.limit}`);
  const questions = opts.limit !== undefined ? items.slice(0, opts.limit) : [...items];
  if (questions.length === 0) throw new Error('there are no questions to evaluate');

  const tower: Tower = opts.tower ?? opts.probes.tower ?? 'text';
  const { layers, heads, headDim } = dims[tower];
  if ((opts.probes.layers !== undefined && opts.probes.layers !== layers) || (opts.probes.heads !== undefined && opts.probes.heads !== heads)) {
    throw new Error(
      `the probes rank ${opts.probes.layers ?? '?'} layers x ${opts.probes.heads ?? '?'} heads, but the model's ${tower} tower has ${layers} x ${heads}; ` +
        'were they fitted on activations of this model?',
    );
  }
  const byName = new Map(opts.probes.functions.map((f) => [f.function, f]));
  const inData = new Set(questions.map((q) => q.function as string));
  let targets: string[];
  if (opts.functions) {
    targets = [...new Set(opts.functions)];
    if (targets.length === 0) throw new Error('functions is empty');
    for (const f of targets) {
      if (!byName.has(f)) throw new Error(`function ${JSON.stringify(f)} is not in the probes (they rank ${[...byName.keys()].join(', ')})`);
      if (!inData.has(f)) throw new Error(`function ${JSON.stringify(f)} has no questions to measure it on (the questions cover ${[...inData].sort().join(', ')})`);
    }
  } else {
    targets = [...byName.keys()].filter((f) => inData.has(f));
    if (targets.length === 0) {
      throw new Error(`none of the probed functions (${[...byName.keys()].join(', ')}) has questions (the questions cover ${[...inData].sort().join(', ')})`);
    }
  }
  if (opts.k !== undefined && (!Number.isInteger(opts.k) || opts.k < 1)) throw new Error(`k must be a positive integer, got ${opts.k}`);
  const store = opts.store ? asStore(opts.store) : undefined;
  if ((mode === 'mean_ablate' || mode === 'steer') && !store) throw new Error(`mode ${mode} needs an activation store (store) for its vectors`);
  if (store && (mode === 'mean_ablate' || mode === 'steer') && (store.layers !== layers || store.heads !== heads)) {
    throw new Error(`the activation store holds ${store.layers} layers x ${store.heads} heads, but the model's ${tower} tower has ${layers} x ${heads}`);
  }
  const means = mode === 'mean_ablate' ? meanVectors(store!, allHeads(layers, heads), { headDim }) : undefined;

  const specFor = (fn: string, hs: HeadRef[]): InterventionSpec => {
    let directions: Map<string, SteeringDirection> | undefined;
    if (mode === 'steer') {
      const probeWeights = directionKind === 'probe' ? opts.probeWeights?.[fn] : undefined;
      if (directionKind === 'probe' && !probeWeights) throw new Error(`direction "probe" needs probe weights for function ${JSON.stringify(fn)}`);
      directions = steeringDirections(store!, fn, hs, { kind: directionKind, probeWeights, headDim });
    }
    return buildIntervention(mode, hs, { epsilon, alpha, means, directions, tower, queries }, dims);
  };
  const planned: PlannedTarget[] = [];
  for (const fn of targets) {
    const fh = byName.get(fn)!;
    const k = opts.k ?? fh.top.length;
    if (fh.ranking.length < k) throw new Error(`function ${JSON.stringify(fn)}: the ranking holds ${fh.ranking.length} heads, fewer than k = ${k}`);
    const top = (opts.k !== undefined ? fh.ranking.slice(0, k) : fh.top).map(({ layer, head }) => ({ layer, head }));
    for (const h of [...top, ...fh.top]) {
      if (!Number.isInteger(h.layer) || !Number.isInteger(h.head) || h.layer < 0 || h.layer >= layers || h.head < 0 || h.head >= heads) {
        throw new Error(`function ${JSON.stringify(fn)}: head ${headName(h)} is outside the ${tower} tower (${layers} layers x ${heads} heads)`);
      }
    }
    const exclude = new Map<string, HeadRef>();
    for (const h of [...top, ...fh.top]) exclude.set(headKey(h), { layer: h.layer, head: h.head });
    if (layers * heads - exclude.size < k) {
      throw new Error(
        `function ${JSON.stringify(fn)}: k = ${k} random heads cannot be drawn from the ${layers * heads - exclude.size} heads outside its ${exclude.size} functional heads; use a smaller k`,
      );
    }
    const excludeKeys = new Set(exclude.keys());
    planned.push({
      function: fn,
      k,
      excluded: [...exclude.values()].sort((a, b) => a.layer - b.layer || a.head - b.head),
      top: { label: `top-k ${fn}`, heads: top, spec: specFor(fn, top) },
      random: seeds.map((seed) => {
        const hs = randomHeads(k, excludeKeys, layers, heads, seed);
        return { label: `random-k ${fn} seed ${seed}`, heads: hs, seed, spec: specFor(fn, hs) };
      }),
    });
  }
  return { mode, tower, epsilon, alpha, queries, direction: directionKind, seeds, questions, targets: planned };
}

export type ExecuteOptions = Pick<AblationOptions, 'maxNewTokens' | 'eosTokenIds' | 'onProgress' | 'evaluate'>;

/** Runs a plan: the baseline, then per target its top-k run and its random-k runs; accuracies and tests as in the file comment. */
export async function executeAblation(model: VlmModel, tokenizer: Tokenizer, plan: AblationPlan, opts: ExecuteOptions = {}): Promise<AblationResult> {
  const runs = 1 + plan.targets.reduce((n, p) => n + 1 + p.random.length, 0);
  const score = opts.evaluate ?? evaluate;
  let run = 0;
  const evalRun = async (label: string, interventions: InterventionSpec | undefined): Promise<AccuracyBreakdown> => {
    const r = await score(model, tokenizer, plan.questions, {
      interventions,
      maxNewTokens: opts.maxNewTokens,
      eosTokenIds: opts.eosTokenIds,
      onProgress: opts.onProgress ? (done, total, correct) => opts.onProgress!({ run, runs, label, done, total, correct }) : undefined,
    });
    run++;
    return breakdown(r);
  };

  const baseline = await evalRun('baseline', undefined);
  const out: AblationTarget[] = [];
  for (const p of plan.targets) {
    const top: AblationRun = { heads: p.top.heads, accuracy: await evalRun(p.top.label, p.top.spec) };
    const random: AblationRun[] = [];
    for (const r of p.random) random.push({ heads: r.heads, seed: r.seed, accuracy: await evalRun(r.label, r.spec) });
    const ra = random.map((r) => r.accuracy);
    const byFunction: Record<string, AblationComparison> = {};
    for (const f of Object.keys(baseline.byFunction)) byFunction[f] = compare(baseline, top.accuracy, ra, (b) => b.byFunction[f]);
    out.push({
      function: p.function,
      k: p.k,
      excluded: p.excluded,
      top,
      random,
      target: byFunction[p.function],
      overall: compare(baseline, top.accuracy, ra, (b) => b.overall),
      byFunction,
    });
  }
  const { questions, targets: _t, ...settings } = plan;
  return { ...settings, questions: questions.length, baseline, targets: out };
}

/**
 * The experiment of the file comment: a baseline run, then per target function one top-k run and `seeds` random-k
 * runs of the same intervention, every run over the same questions; accuracies per function and overall with the
 * random-k mean, sample std and the t-test of the top-k value against them. The whole plan (planAblation) is
 * built and checked before the first question is answered.
 *
 * @example
 * const probes = probesFromJson(JSON.parse(await readFile('probes/probes.json', 'utf8')));
 * const r = await runAblation(model, tokenizer, items, { probes, mode: 'scale', epsilon: 0.001, seeds: 5 });
 * for (const t of r.targets) console.log(t.function, t.target.baseline, t.target.top, t.target.randomMean, t.target.test.p);
 */
export async function runAblation(model: VlmModel, tokenizer: Tokenizer, items: readonly EvalItem[], opts: AblationOptions): Promise<AblationResult> {
  return executeAblation(model, tokenizer, planAblation(model.dims, items, opts), opts);
}

function allHeads(layers: number, heads: number): HeadRef[] {
  const out: HeadRef[] = [];
  for (let l = 0; l < layers; l++) for (let h = 0; h < heads; h++) out.push({ layer: l, head: h });
  return out;
}
