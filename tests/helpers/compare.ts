// What the engine-vs-reference tests of every family share (tests/*-configs.test.ts against the float64
// references, tests/*-golden.test.ts against the goldens): tolerances, checkpoints in temporary folders, prompt
// ids, greedy-token comparison that skips steps whose reference margin is too small to decide, engine runs inside a
// validation error scope, the stage-by-stage divergence report, and the intervention checks.

import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, expect, it } from 'vitest';
import type { RunInput, RunResult } from '../../src/models/model.js';
import type { VlmModel } from '../../src/models/vlm.js';
import { type HeadSteer, type InterventionSpec, EMPTY_INTERVENTIONS, parseCapture, parseInterventions } from '../../src/spec/spec.js';
import { expectClose, maxAbsDiff, randn, rng } from './gpu.js';
import type { DecoderOutput, ReferenceForwardOptions, ReferenceGreedy } from './reference-math.js';

/** A nested JSON array (golden.json) as one flat list. */
export const flat = (a: unknown): number[] => (Array.isArray(a) ? a.flatMap(flat) : [a as number]);

export const TOL = { logits: 1e-3, pattern: 1e-4, z: 1e-3, features: 1e-3 };
/** A greedy step whose reference top-2 gap is below this cannot be compared token for token. */
export const MIN_MARGIN = 1e-3;
export const NEW_TOKENS = 8;
/** Intervention runs decode further so the decode-step semantics of each temperature scope show in the tokens. */
export const INTERVENTION_TOKENS = 6;

/** A seeded vector as a JSON list (mean_ablate / steer entries). */
export const vec = (n: number, seed: number, scale = 1): number[] => Array.from(randn(n, seed, scale));

/** Temporary folders (named `prefix`...) removed after the file's tests. */
export function tempDirs(prefix: string): () => Promise<string> {
  const dirs: string[] = [];
  afterAll(async () => {
    for (const d of dirs) await rm(d, { recursive: true, force: true });
  });
  return async () => {
    const d = await mkdtemp(join(tmpdir(), prefix));
    dirs.push(d);
    return d;
  };
}

/**
 * A prompt: `prefix`, `lead` random text ids, then each image's ids followed by random text (two ids between
 * images, four after the last). textId maps a uniform draw (seeded) to a text id away from the special ones.
 */
export function promptIds(seed: number, textId: (u: number) => number, prefix: number[], lead: number, images: number[][]): number[] {
  const r = rng(seed);
  const text = (k: number) => Array.from({ length: k }, () => textId(r()));
  const ids = [...prefix, ...text(lead)];
  images.forEach((im, i) => ids.push(...im, ...text(i === images.length - 1 ? 4 : 2)));
  return ids;
}

/** z of the last row as [layers, heads, hd] (the engine's z capture at positions 'last'). */
export function lastRowZ(text: { layers: number; heads: number; headDim: number }, out: DecoderOutput, L: number): Float64Array {
  const W = text.heads * text.headDim;
  const z = new Float64Array(text.layers * W);
  for (let l = 0; l < text.layers; l++) z.set(out.z.subarray((l * L + L - 1) * W, (l * L + L) * W), l * W);
  return z;
}

/** Greedy steps that can be compared token for token: those before the first reference margin below MIN_MARGIN. */
export function comparableSteps(want: ReferenceGreedy): number {
  const low = want.margins.findIndex((m) => m < MIN_MARGIN);
  return low >= 0 ? low : want.tokens.length;
}

/** Compare greedy tokens up to the first step whose reference top-2 margin is too small to decide. */
export function compareTokens(got: number[] | undefined, want: ReferenceGreedy, what: string): void {
  expect(got, `${what}: engine returned no tokens`).toBeDefined();
  const n = comparableSteps(want);
  if (n < want.tokens.length) {
    console.warn(`${what}: reference top-2 margin ${want.margins[n].toExponential(2)} < ${MIN_MARGIN} at step ${n}; comparing only the ${n} tokens before it`);
  }
  expect(got!.slice(0, n), `${what}: greedy tokens (reference margins ${want.margins.map((m) => m.toFixed(4)).join(', ')})`).toEqual(want.tokens.slice(0, n));
}

/** No-cache greedy through a reference forward with explicit temperature rows per step (prompt length P, sequence length L). */
export function greedyWithRows(
  forward: (seq: number[], opts: ReferenceForwardOptions) => { logits: Float64Array },
  vocab: number,
  ids: number[],
  n: number,
  spec: InterventionSpec,
  rowsOf: (P: number, L: number) => [number, number],
): number[] {
  const seq = ids.slice();
  const out: number[] = [];
  for (let t = 0; t < n; t++) {
    const L = seq.length;
    const logits = forward(seq, { interventions: spec, temperatureRows: rowsOf(ids.length, L), promptLength: ids.length }).logits.subarray((L - 1) * vocab);
    let best = 0;
    for (let i = 1; i < vocab; i++) if (logits[i] > logits[best]) best = i;
    out.push(best);
    seq.push(best);
  }
  return out;
}

/**
 * model.run inside a WebGPU validation error scope: a shader that fails to compile or an invalid submit would
 * otherwise read back as zeros and look like a numerical mismatch.
 */
export async function engineRun(model: VlmModel, input: RunInput): Promise<RunResult> {
  const device = model.ctx.device;
  device.pushErrorScope('validation');
  let result: RunResult | undefined;
  let thrown: unknown = null;
  try {
    result = await model.run(input);
  } catch (e) {
    thrown = e;
  }
  const err = await device.popErrorScope();
  if (err) throw new Error(`WebGPU validation error during the engine run: ${err.message}`);
  if (thrown) throw thrown;
  return result!;
}

// ---------------------------------------------------------------------------------------------------------
// Where the engine departs from the reference

/** An engine run that captures every stage: every vision and text hidden state, the image features and all logits. */
export function stagesRun(model: VlmModel, input: Pick<RunInput, 'ids' | 'pixelValues' | 'interventions'>): Promise<RunResult> {
  const d = model.dims;
  return engineRun(model, {
    ...input,
    capture: parseCapture(
      {
        logits: 'all',
        residual: [
          ...Array.from({ length: d.vision.layers + 1 }, (_, layer) => ({ tower: 'vision', layer })),
          ...Array.from({ length: d.text.layers + 1 }, (_, layer) => ({ tower: 'text', layer })),
        ],
        image_features: true,
      },
      d,
    ),
  });
}

/** Report lines of the decoder hidden states and the logits of a stagesRun against the reference. */
export function textStageLines(r: RunResult, want: DecoderOutput, hidden: number, vocab: number): string[] {
  const lines: string[] = [];
  for (const res of r.residual) {
    if (res.tower !== 'text') continue;
    const m = maxAbsDiff(res.data, want.textStates[res.layer]);
    lines.push(`text hidden_state ${res.layer}: max |diff| ${m.max.toExponential(2)} at row ${Math.floor(m.at / hidden)} col ${m.at % hidden}`);
  }
  const m = maxAbsDiff(r.logits!.data, want.logits);
  lines.push(`logits: max |diff| ${m.max.toExponential(2)} at row ${Math.floor(m.at / vocab)}`);
  return lines;
}

export type Close<O> = (got: ArrayLike<number>, exp: ArrayLike<number>, atol: number, what: string, spec: InterventionSpec, refOut: O) => Promise<void>;

/**
 * An expectClose that, on failure, appends where the engine first departs from the reference (report). The
 * plain run's report is made once and reused.
 */
export function closeWithReport<O>(report: (spec: InterventionSpec, refOut: O) => Promise<string>): Close<O> {
  let plain: string | null = null;
  return async (got, exp, atol, what, spec, refOut) => {
    try {
      expectClose(got, exp, atol, 0, what);
    } catch (e) {
      if (plain === null || spec !== EMPTY_INTERVENTIONS) {
        const rep = await report(spec, refOut);
        if (spec === EMPTY_INTERVENTIONS) plain = rep;
        throw new Error(`${(e as Error).message}\nstage by stage:\n${rep}`);
      }
      throw new Error(`${(e as Error).message}\nstage by stage:\n${plain}`);
    }
  };
}

// ---------------------------------------------------------------------------------------------------------
// Interventions

export interface InterventionCase {
  json: unknown;
  /** Other choices of the temperature's query rows per greedy step (prompt length P, sequence length L) that must give other tokens (teeth). */
  wrong?: Record<string, (P: number, L: number) => [number, number]>;
  /** Other readings of each steer entry's query scope (as entries) that must give other greedy tokens. */
  wrongSteer?: Record<string, (e: HeadSteer) => HeadSteer[]>;
}

/** Wrong temperature rows per greedy step that an engine could scale instead of the scope's (`wrong` of a case). */
export const WRONG_ROWS = {
  all: { 'decode rows unscaled': (P: number): [number, number] => [0, P] },
  generated: { 'unscaled (scope ignored)': (): [number, number] => [0, 0], 'last prompt row scaled too': (P: number, L: number): [number, number] => [P - 1, L] },
};

/** Wrong readings of a steer entry's scope (`wrongSteer` of a case). */
export const WRONG_STEER = {
  last: { 'decode rows steered too': (e: HeadSteer): HeadSteer[] => [e, { ...e, queries: 'generated' }] },
  generated: { 'unsteered (scope ignored)': (): HeadSteer[] => [], 'last prompt row steered too': (e: HeadSteer): HeadSteer[] => [e, { ...e, queries: 'last' }] },
};

/** One family's engine and reference on one prompt, for checkIntervention. */
export interface InterventionSubject<O extends DecoderOutput> {
  /** Names the case in warnings. */
  caseName: string;
  model: VlmModel;
  ids: number[];
  pixelValues: RunInput['pixelValues'];
  text: { layers: number; heads: number; headDim: number; vocab: number };
  /** The reference's forward and no-cache greedy on this prompt's images. */
  forward(seq: number[], opts?: ReferenceForwardOptions): O;
  greedy(n: number, spec?: InterventionSpec): ReferenceGreedy;
  /** The reference's plain forward over the prompt. */
  want: O;
  close: Close<O>;
}

/**
 * One intervention case: the engine's logits, text layer-1 pattern, z at the last position and greedy tokens
 * against the reference under the spec; the spec changes the reference's logits (or, when it leaves the prefill
 * alone, does not), and the `wrong` / `wrongSteer` emulations give other tokens than the right one.
 */
export async function checkIntervention<O extends DecoderOutput>(s: InterventionSubject<O>, name: string, c: InterventionCase): Promise<void> {
  const { model, ids, pixelValues } = s;
  const spec = parseInterventions(c.json, model.dims, name);
  const r = await engineRun(model, {
    ids,
    pixelValues,
    interventions: spec,
    capture: parseCapture({ logits: 'all', pattern: [{ tower: 'text', layer: 1 }], z: { positions: 'last' } }, model.dims),
    maxNewTokens: INTERVENTION_TOKENS,
  });
  const o = s.forward(ids, { interventions: spec });
  const changed = maxAbsDiff(o.logits, s.want.logits).max;
  const g = s.greedy(INTERVENTION_TOKENS, spec);
  // 'generated' leaves the prefill alone: its logits must equal the plain ones, its tokens need not.
  const prefillUntouched =
    spec.headScale.length === 0 &&
    spec.meanAblate.length === 0 &&
    (spec.imageTemperature?.queries ?? 'generated') === 'generated' &&
    spec.steer.every((e) => e.queries === 'generated');
  if (prefillUntouched) expect(changed).toBeLessThan(1e-12);
  else expect(changed, `${name} does not change the reference logits`).toBeGreaterThan(1e-3);
  const plain = s.greedy(INTERVENTION_TOKENS);
  if (plain.tokens.join() === g.tokens.join()) {
    console.warn(`${s.caseName} / ${name}: the intervention leaves the reference's greedy tokens unchanged (${g.tokens})`);
  }
  // The token comparison has teeth: other row choices for the temperature give other tokens.
  const n = comparableSteps(g);
  for (const [what, rowsOf] of Object.entries(c.wrong ?? {})) {
    const alt = greedyWithRows(s.forward, s.text.vocab, ids, INTERVENTION_TOKENS, spec, rowsOf);
    expect(alt.slice(0, n), `${name}: the '${what}' emulation should give other tokens`).not.toEqual(g.tokens.slice(0, n));
  }
  for (const [what, entries] of Object.entries(c.wrongSteer ?? {})) {
    const alt = s.greedy(INTERVENTION_TOKENS, { ...spec, steer: spec.steer.flatMap(entries) }).tokens;
    expect(alt.slice(0, n), `${name}: the '${what}' emulation should give other tokens`).not.toEqual(g.tokens.slice(0, n));
  }
  await s.close(r.logits!.data, o.logits, TOL.logits, `${name}: logits`, spec, o);
  await s.close(r.pattern[0].data, o.patterns.get(1)!, TOL.pattern, `${name}: text layer-1 pattern`, spec, o);
  await s.close(r.z!.data, lastRowZ(s.text, o, ids.length), TOL.z, `${name}: z at the last position (after the interventions)`, spec, o);
  compareTokens(r.tokens, g, `${name}: greedy`);
}

/** One test per intervention case of a family's case (checkIntervention), on the subject its beforeAll made. */
export function interventionTests<O extends DecoderOutput>(cases: Record<string, InterventionCase> | undefined, subject: () => InterventionSubject<O>): void {
  for (const [name, c] of Object.entries(cases ?? {})) {
    it(`intervention ${name}: logits, layer-1 pattern, z and ${INTERVENTION_TOKENS} greedy tokens`, () => checkIntervention(subject(), name, c));
  }
}

/** An intervention case of a golden.json: its spec, the last row's logits and, for some, greedy tokens. */
export interface GoldenIntervention {
  spec: unknown;
  last_logits: number[];
  greedy_6?: number[];
}

/** A golden intervention case through the engine: last logits within 1e-3 and, when the golden has them, the 6 greedy tokens. */
export async function checkGoldenIntervention(model: VlmModel, input: Pick<RunInput, 'ids' | 'pixelValues'>, c: GoldenIntervention, name: string): Promise<void> {
  const r = await model.run({
    ...input,
    interventions: parseInterventions(c.spec, model.dims),
    maxNewTokens: c.greedy_6 ? 6 : 0,
  });
  expectClose(r.logits!.data, c.last_logits, 1e-3, 0, name);
  if (c.greedy_6) expect(r.tokens).toEqual(c.greedy_6);
}
