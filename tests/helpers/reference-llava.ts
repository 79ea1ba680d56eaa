// An independent float64 CPU reference of the Hugging Face LLaVA-1.5 forward (LlavaForConditionalGeneration
// with a CLIP vision tower and a Llama decoder), written straight from transformers' llava/modeling_llava.py,
// clip/modeling_clip.py and llama/modeling_llama.py and the intervention contract in docs/interventions.md. It
// shares only the file readers with the engine (checkpoint, config.json parser, f16/bf16 decoding), and its float64
// math (norms, attention with the interventions, the Llama decoder, no-cache greedy) with the Qwen reference
// (reference-math.ts); every number is computed in float64 from the weights as stored, with no KV cache, so it can
// judge the GPU engine (and its cache) across configs.

import { type LlavaConfig, parseLlavaConfig } from '../../src/models/config.js';
import type { InterventionSpec } from '../../src/spec/spec.js';
import {
  type DecoderOutput,
  type ReferenceForwardOptions,
  type ReferenceGreedy,
  activation,
  addInPlace,
  allKeys,
  attention,
  greedyNoCache,
  headScales,
  headVectors,
  layerNorm,
  linear,
  llamaDecoder,
  mapInPlace,
  mergeImageFeatures,
  readFloat64Checkpoint,
  rotate,
  ropeInvFreq,
} from './reference-math.js';

export type { ReferenceForwardOptions, ReferenceGreedy } from './reference-math.js';

// ---------------------------------------------------------------------------------------------------------
// The model

export interface ReferenceOutput extends DecoderOutput {
  /** Projector outputs of all images in order: [images * tokensPerImage, text hidden]. */
  imageFeatures: Float64Array;
  /** CLIP hidden states per image, Hugging Face indices 0..layers: each [visionTokens, vision hidden]. */
  visionStates: Float64Array[][];
}

export interface ReferenceLlava {
  cfg: LlavaConfig;
  /** Image tokens per image. */
  imageTokens: number;
  /** CLIP tokens (patches + CLS). */
  visionTokens: number;
  forward(ids: number[], pixelValues: Float32Array[], opts?: ReferenceForwardOptions): ReferenceOutput;
  greedy(ids: number[], pixelValues: Float32Array[], n: number, interventions?: InterventionSpec): ReferenceGreedy;
}

const VISION_PREFIXES = ['vision_tower.vision_model.', 'model.vision_tower.vision_model.'];
const PROJECTOR_PREFIXES = ['multi_modal_projector.', 'model.multi_modal_projector.'];
const TEXT_PREFIXES = ['language_model.model.', 'model.language_model.', 'language_model.'];
const LM_HEAD_NAMES = ['language_model.lm_head.weight', 'lm_head.weight'];

/** hidden_states indices of vision_feature_layer, resolved against the raw config (negative from the end). */
function featureStates(raw: unknown, layers: number): number[] {
  const list = raw === undefined || raw === null ? [-2] : Array.isArray(raw) ? raw : [raw];
  return list.map((l) => {
    const idx = (l as number) < 0 ? layers + 1 + (l as number) : (l as number);
    if (!Number.isInteger(idx) || idx < 0 || idx > layers) throw new Error(`reference: vision_feature_layer ${l} out of range`);
    return idx;
  });
}

/** Read a Hugging Face LLaVA folder into float64 weights and return the reference model. */
export async function referenceLlava(dir: string): Promise<ReferenceLlava> {
  const { cfg, raw, weights, get } = await readFloat64Checkpoint(dir, (c) => parseLlavaConfig(c));
  const rawFeatureLayer = raw.vision_feature_layer;
  const strategy = ((raw.vision_feature_select_strategy as string | undefined) ?? 'default') as 'default' | 'full';
  const V = (s: string) => get(VISION_PREFIXES, s)!;
  const T = (s: string) => get(TEXT_PREFIXES, s)!;
  const Topt = (s: string) => get(TEXT_PREFIXES, s, false);

  const vc = cfg.vision;
  const tc = cfg.text;
  const grid = vc.imageSize / vc.patchSize;
  const nPatches = grid * grid;
  const visionTokens = nPatches + 1;
  const states = featureStates(rawFeatureLayer, vc.layers);
  const first = strategy === 'default' ? 1 : 0;
  const imageTokens = visionTokens - first;
  const rawVisionAct = ((raw.vision_config as Record<string, unknown> | undefined)?.hidden_act as string | undefined) ?? 'quick_gelu';
  const rawTextAct = ((raw.text_config as Record<string, unknown> | undefined)?.hidden_act as string | undefined) ?? 'silu';
  const rawProjAct = (raw.projector_hidden_act as string | undefined) ?? 'gelu';
  const visionAct = activation(rawVisionAct);
  const textAct = activation(rawTextAct);
  const projAct = activation(rawProjAct);

  const lmHead =
    LM_HEAD_NAMES.map((n) => weights.get(n)).find((w) => w !== undefined) ?? (tc.tieEmbeddings ? T('embed_tokens.weight') : null);
  if (!lmHead) throw new Error(`reference: no lm_head in ${dir}`);
  const pw = (s: string) => get(PROJECTOR_PREFIXES, s, s.endsWith('weight'));

  const invFreq = ropeInvFreq(tc.headDim, tc.ropeTheta);
  /** HF rotate_half RoPE (§1.5): row r at position r. */
  const rope = (x: Float64Array, heads: number) => rotate(x, x.length / (heads * tc.headDim), heads, tc.headDim, (r, j) => r * invFreq[j]);

  /** CLIP vision tower (§2.4) over one image [C, S, S]: hidden_states 0..layers. */
  const vision = (px: Float32Array, scales: Float64Array[], vectors: ReturnType<typeof headVectors>): Float64Array[] => {
    const { hidden: E, channels: C, patchSize: P, imageSize: S, heads: H, headDim: hd, eps } = vc;
    if (px.length !== C * S * S) throw new Error(`reference: pixel values have ${px.length} values, expected ${C * S * S}`);
    const conv = V('embeddings.patch_embedding.weight'); // [E, C, P, P], no bias
    const cls = V('embeddings.class_embedding');
    const pos = V('embeddings.position_embedding.weight');
    const e = new Float64Array(visionTokens * E);
    for (let i = 0; i < E; i++) e[i] = cls[i] + pos[i];
    for (let py = 0; py < grid; py++) {
      for (let pxi = 0; pxi < grid; pxi++) {
        const t = 1 + py * grid + pxi; // flatten(2): row-major (row, col), CLS first
        for (let o = 0; o < E; o++) {
          let s = 0;
          for (let c = 0; c < C; c++)
            for (let ky = 0; ky < P; ky++)
              for (let kx = 0; kx < P; kx++) {
                s += conv[((o * C + c) * P + ky) * P + kx] * px[(c * S + py * P + ky) * S + pxi * P + kx];
              }
          e[t * E + o] = s + pos[t * E + o];
        }
      }
    }
    let h = layerNorm(e, E, V('pre_layrnorm.weight'), V('pre_layrnorm.bias'), eps);
    const out = [h];
    for (let l = 0; l < vc.layers; l++) {
      const p = `encoder.layers.${l}.`;
      const n1 = layerNorm(h, E, V(p + 'layer_norm1.weight'), V(p + 'layer_norm1.bias'), eps);
      const q = linear(n1, visionTokens, E, V(p + 'self_attn.q_proj.weight'), E, V(p + 'self_attn.q_proj.bias'));
      const k = linear(n1, visionTokens, E, V(p + 'self_attn.k_proj.weight'), E, V(p + 'self_attn.k_proj.bias'));
      const v = linear(n1, visionTokens, E, V(p + 'self_attn.v_proj.weight'), E, V(p + 'self_attn.v_proj.bias'));
      const z = attention({
        q, k, v, n: visionTokens, heads: H, kvHeads: H, hd, keys: allKeys(visionTokens),
        headScale: scales[l], vectors: vectors[l], headAlpha: null, isImageKey: null, tempRow: null, pattern: null,
      });
      const h2 = addInPlace(linear(z, visionTokens, E, V(p + 'self_attn.out_proj.weight'), E, V(p + 'self_attn.out_proj.bias')), h);
      const n2 = layerNorm(h2, E, V(p + 'layer_norm2.weight'), V(p + 'layer_norm2.bias'), eps);
      const f = mapInPlace(linear(n2, visionTokens, E, V(p + 'mlp.fc1.weight'), vc.intermediate, V(p + 'mlp.fc1.bias')), visionAct);
      h = addInPlace(linear(f, visionTokens, vc.intermediate, V(p + 'mlp.fc2.weight'), E, V(p + 'mlp.fc2.bias')), h2);
      out.push(h); // post_layernorm is never applied to hidden_states
    }
    return out;
  };

  /** get_image_features (§2.5): select + concat hidden states, drop CLS under 'default', then the projector. */
  const project = (hs: Float64Array[]): Float64Array => {
    const E = vc.hidden;
    const nf = states.length;
    const feat = new Float64Array(imageTokens * E * nf);
    states.forEach((s, j) => {
      for (let r = 0; r < imageTokens; r++)
        for (let i = 0; i < E; i++) feat[r * E * nf + j * E + i] = hs[s][(r + first) * E + i];
    });
    const D = tc.hidden;
    const mid = mapInPlace(linear(feat, imageTokens, E * nf, pw('linear_1.weight')!, D, pw('linear_1.bias')), projAct);
    return linear(mid, imageTokens, D, pw('linear_2.weight')!, D, pw('linear_2.bias'));
  };

  const forward = (ids: number[], pixelValues: Float32Array[], opts: ReferenceForwardOptions = {}): ReferenceOutput => {
    const spec = opts.interventions;
    const D = tc.hidden;

    // Vision + projector, image by image.
    const vScales = headScales(spec, 'vision', vc.layers, vc.heads);
    const vVectors = headVectors(spec, 'vision', vc.layers, vc.heads, visionTokens);
    const visionStates = pixelValues.map((px) => vision(px, vScales, vVectors));
    const imageFeatures = new Float64Array(pixelValues.length * imageTokens * D);
    visionStates.forEach((hs, i) => imageFeatures.set(project(hs), i * imageTokens * D));

    // embed_tokens + masked_scatter of the features over <image> rows, in order (§2.6); a generated <image> id
    // (at or after promptLength) is a plain token.
    const { h, isImage } = mergeImageFeatures(ids, opts.promptLength ?? ids.length, cfg.imageTokenIndex, T('embed_tokens.weight'), D, tc.vocab, imageFeatures);

    // Llama decoder (§1.6).
    const dec = llamaDecoder({
      dims: tc,
      weight: T,
      bias: Topt,
      lmHead,
      act: textAct,
      rope,
      h,
      isImage,
      interventions: spec,
      temperatureRows: opts.temperatureRows,
      promptLength: opts.promptLength,
    });
    return { ...dec, imageFeatures, visionStates };
  };

  /** Greedy decoding without a KV cache (see greedyNoCache): every step re-runs the whole forward. */
  const greedy = (ids: number[], pixelValues: Float32Array[], n: number, interventions?: InterventionSpec): ReferenceGreedy =>
    greedyNoCache(ids, n, tc.vocab, interventions, (seq, o) => forward(seq, pixelValues, o).logits);

  return { cfg, imageTokens, visionTokens, forward, greedy };
}
