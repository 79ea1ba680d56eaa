// The attention part of `npm run bench:kernels`: the attention kernel at prefill (L query rows over L causal keys,
// L = 64..2048) and decode (one query row over L keys) with head_dim 64 and 128, plain against every per-head
// parameter on and against the captures, as ratios to plain measured in the same run. From L = 1024 the prefill
// is timed on its last PREFILL_TAIL query rows (the rows that see the most keys: positions L - 32 .. L - 1 over
// L keys), since a whole 2048-row prefill takes tens of seconds a call on a CPU adapter.
//
// Contenders (all in the same process on the same device, interleaved, BENCH_ATTENTION_REPS repetitions):
//   plain        what an un-intervened run records: neutral head params (scale 1, alpha 1), nothing else bound;
//   all params   one spec with every per-head parameter the phase allows, through the engine's own tables
//                (src/spec/head-params.ts). On every head the ones that keep the head's work: head_scale,
//                image_temperature (all rows; image keys a block of half the sequence), steer (all rows), attention
//                knockout of the edges from the last prompt row (prefill) or the generated rows (decode) to the image
//                keys; and the ones that replace z_h, so that the kernel skips the head's keys (without a capture):
//                mean_ablate on heads 1 mod 4, and in prefill patch_z of the last row on heads 0 mod 4 (decode steps
//                are never patched). Prefill runs one head: there only its last row is patched;
//   pattern      the plain call capturing the probabilities [heads, rows, L];
//   z last       the plain call and the copy of z at the last position, as the decoder records a z capture;
//   (BENCH_ATTENTION=full adds each parameter alone: temperature, vectors (mean_ablate + steer), knockout, patch_z.)
// Split KV (every set): decode at L = 1024, 2048 (head_dim 64; default and full also 128), the split-KV path forced
// on (split_partial + split_merge, sliced as planAttention slices on a GPU) against the single pass forced on, as
// its own table ('split-KV / single pass'; rows with contender 'split-KV' in the JSON). Where the adapter's own rule
// would pick split KV for a decode step, 'plain' above is already split KV.
// Tiled (every set): prefill at L = 256 (quick) or 256, 1024, 2048 (default, full), over 512 / head_dim heads, the
// tiled path forced on (blocked as planAttention blocks this shape on this adapter) against main forced on, as its own
// table ('tiled / main'; rows with contender 'tiled' in the JSON), with the K / V rows each reads from global memory
// per call (attentionKvReads: main once per (row, head), tiled once per (block, head); a device-independent figure,
// since the bytes bound are the same for both). Where the adapter's own rule would tile, 'plain' above is tiled. The
// same table has solo forced on ('solo / main'; rows with contender 'solo'), checked equal to main bit for bit; where
// the rule picks solo (a CPU adapter), 'plain' above is solo.
// Shapes: decode over 512 / head_dim heads (8 of 64, 4 of 128), prefill over one head (PREFILL_HEADS), so that the
// long lengths stay affordable on a CPU adapter: a (row, head) is one workgroup whose work does not depend on the
// others, so the ratios hold for any head count.
// Timing: CPU time of this process (every thread; SwiftShader runs the kernels on them) per call, since wall time on
// this shared 2-core machine swings by a factor 2 with other jobs; the ratio is the median over repetitions of
// (contender / plain in the same repetition), with its quartiles. Wall-time medians are in the JSON too.

import type { GpuContext } from '../src/gpu/context.js';
import type { Tensor } from '../src/gpu/tensor.js';
import { type BenchClock, timeCalls } from './bench-pair.js';
import { attention, attentionKvReads, attentionPlan, imageKeySpanAfter, type AttentionArgs } from '../kernels/attention.js';
import { type InterventionSpec, EMPTY_INTERVENTIONS } from '../src/spec/spec.js';
import { headParamTable, headVectorTable, knockoutBits, patchCall, steerRows, temperatureRows } from '../src/spec/head-params.js';

export interface AttentionBenchOptions {
  reps: number;
  /** Per measurement: calls are repeated until one measurement takes about this long. */
  minMs: number;
  /** quick: L 64, 256 and head_dim 64; default: L 64..2048, head_dim 64 and 128; full: also each parameter alone. */
  set: 'quick' | 'default' | 'full';
  random(n: number, seed: number, scale: number): Float32Array;
  median(xs: number[]): number;
  /** What ratio_vs_plain divides (bench-pair.ts benchClock); CPU time when not given. */
  clock?: BenchClock;
}

export interface AttentionRow {
  phase: 'prefill' | 'decode';
  L: number;
  /** Query rows of the timed call (prefill: L, or the last PREFILL_TAIL rows; decode: 1). */
  rows: number;
  headDim: number;
  heads: number;
  contender: string;
  /** Median wall time of one call. */
  ms: number;
  /** Median CPU time of this process (every thread) per call: what SwiftShader spent, less exposed to other jobs. */
  cpu_ms: number;
  /** With the gpu clock: median GPU time per call (GpuTimer). */
  gpu_ms?: number;
  /** Median over repetitions of (this contender's time / plain's in the same repetition): CPU, wall or GPU time, o.clock. */
  ratio_vs_plain: number;
  /** Quartiles of those per-repetition ratios (the spread the machine's load leaves). */
  ratio_q1: number;
  ratio_q3: number;
  /** Median wall time / plain's. */
  wall_ratio_vs_plain: number;
  max_abs_diff_vs_plain: number | null;
  samples_cpu_ms: number[];
  /** Tiled comparison: the blocking, and the K / V rows (head_dim floats each) this contender reads per call. */
  tile?: string;
  kv_rows_read?: number;
}

const PREFILL_HEADS = 1;
/** Decode heads: a 512-wide slice of a layer (8 heads of 64, 4 of 128). */
const DECODE_WIDTH = 512;
/** Query rows timed of prefills from PREFILL_FULL_MAX keys on (the last ones). */
const PREFILL_TAIL = 32;
const PREFILL_FULL_MAX = 256;

type Phase = 'prefill' | 'decode';

interface Case {
  phase: Phase;
  L: number;
  hd: number;
  heads: number;
  /** The split-KV comparison (decode): single pass vs split KV, both forced. */
  splitKV?: boolean;
  /** The tiled comparison (prefill): main vs tiled, both forced. */
  tiled?: boolean;
}

/** Decode lengths of the split-KV comparison: at least two slices of SPLIT_MIN_KEYS. */
const SPLIT_LENGTHS = [1024, 2048];
/** Prefill lengths of the tiled comparison (from 1024 on, the last PREFILL_TAIL rows, as above). */
const TILED_LENGTHS = { quick: [256], default: [256, 1024, 2048], full: [256, 1024, 2048] } as const;

function cases(set: AttentionBenchOptions['set']): Case[] {
  const lengths = set === 'quick' ? [64, 256] : [64, 256, 1024, 2048];
  const dims = set === 'quick' ? [64] : [64, 128];
  const out: Case[] = [];
  for (const phase of ['decode', 'prefill'] as const)
    for (const hd of dims) for (const L of lengths) out.push({ phase, L, hd, heads: phase === 'decode' ? DECODE_WIDTH / hd : PREFILL_HEADS });
  for (const hd of dims) for (const L of SPLIT_LENGTHS) out.push({ phase: 'decode', L, hd, heads: DECODE_WIDTH / hd, splitKV: true });
  for (const hd of dims) for (const L of TILED_LENGTHS[set]) out.push({ phase: 'prefill', L, hd, heads: DECODE_WIDTH / hd, tiled: true });
  return out;
}

/** The spec "every per-head parameter on" for one layer of `heads` heads (patch_z only in prefill). */
function allParamsSpec(c: Case, only: string | null, random: AttentionBenchOptions['random']): InterventionSpec {
  const heads = [...Array(c.heads).keys()];
  const want = (what: string) => only === null || only === what;
  const spec: InterventionSpec = { ...EMPTY_INTERVENTIONS, headScale: [], meanAblate: [], steer: [], knockout: [], patchZ: [] };
  if (want('scale')) spec.headScale = heads.map((h) => ({ tower: 'text', layer: 0, head: h, scale: 0.5 + (h % 3) * 0.5 }));
  if (want('temperature')) spec.imageTemperature = { alpha: 1.5, queries: 'all', layers: null, heads: null };
  if (want('vectors')) {
    spec.meanAblate = heads.filter((h) => h % 4 === 1).map((h) => ({ tower: 'text', layer: 0, head: h, mean: random(c.hd, 100 + h, 0.5) }));
    spec.steer = heads.map((h) => ({ tower: 'text', layer: 0, head: h, alpha: 2, sigma: 0.5, direction: random(c.hd, 200 + h, 1), queries: 'all' }));
  }
  if (want('knockout')) spec.knockout = [{ layers: null, heads: null, queries: c.phase === 'prefill' ? 'last' : 'generated', keys: { kind: 'image' } }];
  if (want('patch') && c.phase === 'prefill') {
    spec.patchZ = heads.filter((h) => h % 4 === 0).map((h) => ({ tower: 'text', layer: 0, head: h, rows: 'last', values: random(c.hd, 300 + h, 0.5) }));
  }
  return spec;
}

interface Contender {
  name: string;
  record(rec: ReturnType<GpuContext['recorder']>): void;
  z: Tensor;
}

export async function benchAttention(
  ctx: GpuContext,
  o: AttentionBenchOptions,
): Promise<{ rows: AttentionRow[]; table: string[][]; names: string[]; splitTable: string[][]; tiledTable: string[][] }> {
  const rows: AttentionRow[] = [];
  const table: string[][] = [];
  const splitTable: string[][] = [];
  const tiledTable: string[][] = [];
  let names: string[] = [];
  for (const c of cases(o.set)) {
    const { L, hd, heads } = c;
    const qRows = c.phase === 'decode' ? 1 : L <= PREFILL_FULL_MAX ? L : PREFILL_TAIL;
    const pos0 = L - qRows;
    const width = heads * hd;
    const dims = { layers: 1, heads, headDim: hd };
    const owned: GPUBuffer[] = [];
    const upload = (data: Float32Array | Uint32Array, shape: number[], label: string) => {
      const t = ctx.activation(shape, label);
      ctx.write(t.buffer, 0, data);
      owned.push(t.buffer);
      return t;
    };
    const storage = (data: Float32Array | Uint32Array, label: string) => {
      const b = ctx.createBuffer(data.byteLength, GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST, label);
      ctx.write(b, 0, data);
      owned.push(b);
      return b;
    };
    const q = upload(o.random(qRows * width, 1 + L + hd, 1), [qRows, width], 'q');
    const k = upload(o.random(L * width, 2 + L + hd, 1), [L, width], 'k');
    const v = upload(o.random(L * width, 3 + L + hd, 1), [L, width], 'v');
    // Image tokens: a block of half the keys after a short text prefix (as LLaVA's prompt has them).
    const imgBegin = Math.min(5, L >> 3);
    const imageKeys = Array.from({ length: L >> 1 }, (_, j) => imgBegin + j);
    const isImage = new Uint32Array(L);
    for (const j of imageKeys) isImage[j] = 1;
    const keyIsImage = storage(isImage, 'key_is_image');
    const plainParams = storage(headParamTable(EMPTY_INTERVENTIONS, 'text', dims), 'head_params.plain');
    const base: AttentionArgs = {
      q,
      rows: qRows,
      heads,
      kvHeads: heads,
      headDim: hd,
      k,
      v,
      nKeys: L,
      causal: true,
      pos0,
      headParams: plainParams,
      keyIsImage,
      // One run of image keys: what the decoder passes for a one-image prompt (the flags then go unread).
      imageKeySpan: imageKeySpanAfter(null, 0, isImage, L),
      z: q, // replaced per contender
    };
    const contenders: Contender[] = [];
    const add = (name: string, args: Partial<AttentionArgs>, zLast = false) => {
      const z = ctx.activation([qRows, width], `z.${name}`);
      owned.push(z.buffer);
      const zCap = zLast ? ctx.activation([1, width], 'capture.z') : null;
      if (zCap) owned.push(zCap.buffer);
      contenders.push({
        name,
        z,
        record(rec) {
          attention(ctx, rec, { ...base, ...args, z, label: `bench.attention.${name}` });
          if (zCap) rec.copy(z.buffer, (qRows - 1) * width * 4, zCap.buffer, 0, width * 4);
        },
      });
    };
    const intervened = (name: string, only: string | null) => {
      const spec = allParamsSpec(c, only, o.random);
      const params = storage(headParamTable(spec, 'text', dims), `head_params.${name}`);
      const vectors = headVectorTable(spec, 'text', dims);
      const words = Math.ceil(L / 32);
      const ko = knockoutBits(spec, { layers: 1, phase: c.phase, pos0, rows: qRows, words, nKeys: L, imageKeys });
      const patch = c.phase === 'prefill' ? patchCall(spec, dims, { pos0, rows: qRows, promptLength: L, vectors }) : null;
      let headVectors: AttentionArgs['headVectors'] = null;
      if (patch) {
        const b = storage(patch.data, `patch.${name}`);
        headVectors = { buffer: b, offset: 0, size: patch.slotBytes };
      } else if (vectors) {
        headVectors = storage(vectors, `head_vectors.${name}`);
      }
      add(name, {
        headParams: params,
        headVectors,
        patch: patch ? { map: patch.mapOffset, vectors: patch.vectorOffset } : null,
        knockout: ko ? { bits: storage(ko.bits, `knockout.${name}`), words } : null,
        tempRows: temperatureRows(spec.imageTemperature?.queries ?? null, c.phase, qRows),
        steerRows: steerRows(c.phase, qRows),
      });
    };
    let splitNote = '';
    let tiledNote = '';
    const kvRead = new Map<string, number>();
    const tileOf = new Map<string, string>();
    if (c.tiled) {
      add('main', { split: false, tiled: false, solo: false });
      add('tiled', { tiled: true });
      add('solo', { solo: true });
      const shape = { rows: qRows, heads, nKeys: L, pos0, causal: true };
      const mainPlan = attentionPlan(ctx, { ...base, split: false, tiled: false, solo: false });
      const plan = attentionPlan(ctx, { ...base, tiled: true });
      const own = attentionPlan(ctx, base);
      if (!plan.tile) throw new Error(`bench-attention: tiled forced at L ${L} head_dim ${hd} ran main: ${plan.reason}`);
      kvRead.set('main', attentionKvReads(mainPlan, shape));
      kvRead.set('tiled', attentionKvReads(plan, shape));
      tileOf.set('tiled', `${plan.tile.rows} rows x ${plan.tile.keys} keys`);
      const [km, kt] = [kvRead.get('main')!, kvRead.get('tiled')!];
      tiledNote = `${tileOf.get('tiled')}; K/V rows read ${km} / ${kt} (${(km / kt).toFixed(1)}x fewer, ${((km - kt) * hd * 4 / 2 ** 20).toFixed(1)} MiB less); this adapter's rule: ${own.tile ? 'tiled' : own.split ? 'split' : own.solo ? 'solo' : 'main'}`;
    } else if (c.splitKV) {
      add('single pass', { split: false });
      add('split-KV', { split: true });
      const plan = attentionPlan(ctx, { ...base, split: true });
      const own = attentionPlan(ctx, base);
      splitNote = `${plan.splits} x ${plan.chunk} keys; this adapter's rule: ${own.split ? 'split' : 'single pass'}`;
    } else {
      add('plain', {});
      intervened('all params', null);
      const pattern = ctx.activation([heads, qRows, L], 'capture.pattern');
      owned.push(pattern.buffer);
      add('pattern', { pattern });
      add('z last', {}, true);
    }
    if (o.set === 'full' && !c.splitKV && !c.tiled) {
      for (const only of ['temperature', 'vectors', 'knockout', ...(c.phase === 'prefill' ? ['patch'] : [])]) intervened(only, only);
    }

    // One measurement: `inner` calls recorded into one step, submitted, waited for. Wall time and the CPU time of
    // this process (all its threads: SwiftShader executes the kernels on them); the ratios use o.clock's.
    // With the gpu clock, the GPU time of the step's passes (a z-last capture's row copy between calls ends a pass
    // and is not counted; it moves one row). bench-pair.ts timeCalls.
    const run = (x: Contender, inner: number) => timeCalls(ctx, (_, rec) => x.record(rec), inner, o.clock === 'gpu');
    // Warm-up (pipelines), a check that the captures leave z alone, and one `inner` for all (from plain).
    const zs = new Map<Contender, Float32Array>();
    for (const x of contenders) {
      await run(x, 1);
      zs.set(x, await ctx.readF32(x.z.buffer, 0, qRows * width));
    }
    const once = (await run(contenders[0], 1)).wall;
    const inner = Math.max(1, Math.min(64, Math.round(o.minMs / Math.max(once, 0.05))));
    const ref = zs.get(contenders[0])!;
    const diff = (z: Float32Array) => z.reduce((m, x, i) => Math.max(m, Math.abs(x - ref[i])), 0);
    for (const name of ['pattern', 'z last', 'solo']) {
      const x = contenders.find((y) => y.name === name);
      if (x && diff(zs.get(x)!) !== 0) throw new Error(`bench-attention: ${name} changed z at ${c.phase} L ${L} head_dim ${hd}`);
    }
    // Split KV merges the slices in another order than the single pass accumulates, tiled rescales at other keys:
    // equal to rounding.
    const refMax = ref.reduce((m, x) => Math.max(m, Math.abs(x)), 1); // not Math.max(...ref): a prefill's z overflows the stack
    for (const name of ['split-KV', 'tiled']) {
      const x = contenders.find((y) => y.name === name);
      if (x && !(diff(zs.get(x)!) <= 1e-5 * refMax)) {
        throw new Error(`bench-attention: ${name} differs from ${contenders[0].name} by ${diff(zs.get(x)!)} at L ${L} head_dim ${hd}`);
      }
    }
    const wall = new Map<Contender, number[]>(contenders.map((x) => [x, []]));
    const cpu = new Map<Contender, number[]>(contenders.map((x) => [x, []]));
    const gpuMs = new Map<Contender, number[]>(contenders.map((x) => [x, []]));
    for (let r = 0; r < o.reps; r++) {
      // Rotate the order each repetition so no contender always runs first after a pause.
      for (let j = 0; j < contenders.length; j++) {
        const x = contenders[(j + r) % contenders.length];
        const t = await run(x, inner);
        wall.get(x)!.push(t.wall);
        cpu.get(x)!.push(t.cpu);
        if (t.gpu !== null) gpuMs.get(x)!.push(t.gpu);
      }
    }
    const plainWall = o.median(wall.get(contenders[0])!);
    const plainCpu = cpu.get(contenders[0])!;
    const ratioSeries = o.clock === 'wall' ? wall : o.clock === 'gpu' ? gpuMs : cpu;
    const plainSeries = ratioSeries.get(contenders[0])!;
    const quartile = (xs: number[], f: number) => {
      const srt = [...xs].sort((a, b) => a - b);
      const at = f * (srt.length - 1);
      return srt[Math.floor(at)] + (srt[Math.ceil(at)] - srt[Math.floor(at)]) * (at - Math.floor(at));
    };
    const line: string[] = [
      c.phase,
      String(L),
      qRows === L || c.phase === 'decode' ? String(qRows) : `last ${qRows}`,
      String(hd),
      String(heads),
      plainWall.toFixed(2),
      o.median(plainCpu).toFixed(2),
    ];
    for (const x of contenders) {
      const paired = ratioSeries.get(x)!.map((t, r) => t / plainSeries[r]);
      const ratio = o.median(paired);
      rows.push({
        phase: c.phase,
        L,
        rows: qRows,
        headDim: hd,
        heads,
        contender: x.name,
        ms: +o.median(wall.get(x)!).toFixed(3),
        cpu_ms: +o.median(cpu.get(x)!).toFixed(3),
        ...(o.clock === 'gpu' ? { gpu_ms: +o.median(gpuMs.get(x)!).toFixed(5) } : {}),
        ratio_vs_plain: +ratio.toFixed(3),
        ratio_q1: +quartile(paired, 0.25).toFixed(3),
        ratio_q3: +quartile(paired, 0.75).toFixed(3),
        wall_ratio_vs_plain: +(o.median(wall.get(x)!) / plainWall).toFixed(3),
        max_abs_diff_vs_plain: x === contenders[0] ? 0 : +diff(zs.get(x)!).toExponential(2),
        samples_cpu_ms: cpu.get(x)!.map((t) => +t.toFixed(3)),
        ...(tileOf.has(x.name) ? { tile: tileOf.get(x.name) } : {}),
        ...(kvRead.has(x.name) ? { kv_rows_read: kvRead.get(x.name) } : {}),
      });
      if (x !== contenders[0]) line.push(`${ratio.toFixed(3)} (${quartile(paired, 0.25).toFixed(2)}-${quartile(paired, 0.75).toFixed(2)})`);
    }
    if (c.tiled) {
      line.push(tiledNote);
      tiledTable.push(line);
      printTiledTable([line], tiledTable.length === 1);
      for (const b of owned) ctx.destroyBuffer(b);
      continue;
    }
    if (c.splitKV) {
      line.push(splitNote);
      splitTable.push(line);
      printSplitTable([line], splitTable.length === 1);
      for (const b of owned) ctx.destroyBuffer(b);
      continue;
    }
    table.push(line);
    // Decode has no patch_z contender: the columns of the first case (prefill's extra one last) head the table.
    if (contenders.length - 1 > names.length) names = contenders.slice(1).map((x) => x.name);
    printAttentionTable([line], names, table.length === 1);
    for (const b of owned) ctx.destroyBuffer(b);
  }
  return { rows, table, names, splitTable, tiledTable };
}

/** The tiled comparison: prefill, tiled and solo forced against main forced, CPU-time ratios, blocking and K / V rows read. */
export function printTiledTable(body: string[][], header: boolean): void {
  const head = ['phase', 'L', 'query rows', 'head_dim', 'heads', 'main ms', 'main CPU ms', 'tiled / main', 'solo / main', 'blocking, K/V rows read (main / tiled)'];
  const widths = head.map((h, i) => Math.max(h.length, ...body.map((r) => (r[i] ?? '').length)));
  const fmt = (r: string[]) => r.map((x, i) => (i === 0 || i === r.length - 1 ? x.padEnd(widths[i]) : x.padStart(widths[i]))).join('  ');
  if (header) console.log(`\ntiled and solo (forced) against main (forced), prefill:\n${fmt(head)}`);
  for (const r of body) console.log(fmt(r));
}

/** The split-KV comparison: decode, split KV forced against the single pass forced, CPU-time ratio. */
export function printSplitTable(body: string[][], header: boolean): void {
  const head = ['phase', 'L', 'query rows', 'head_dim', 'heads', 'single pass ms', 'single pass CPU ms', 'split-KV / single pass', 'slices'];
  const widths = head.map((h, i) => Math.max(h.length, ...body.map((r) => (r[i] ?? '').length)));
  const fmt = (r: string[]) => r.map((x, i) => (i === 0 || i === r.length - 1 ? x.padEnd(widths[i]) : x.padStart(widths[i]))).join('  ');
  if (header) console.log(`\nsplit KV (forced) against the single pass (forced), decode:\n${fmt(head)}`);
  for (const r of body) console.log(fmt(r));
}

export function printAttentionTable(body: string[][], names: string[], header: boolean): void {
  const head = ['phase', 'L', 'query rows', 'head_dim', 'heads', 'plain ms', 'plain CPU ms', ...names.map((n) => `${n} / plain`)];
  const widths = head.map((h, i) => Math.max(h.length, ...body.map((r) => (r[i] ?? '').length)));
  const fmt = (r: string[]) => r.map((x, i) => (i === 0 ? x.padEnd(widths[i]) : x.padStart(widths[i]))).join('  ');
  if (header) console.log(fmt(head));
  for (const r of body) console.log(fmt(r));
}
