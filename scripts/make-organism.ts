// `npx tsx scripts/make-organism.ts [--work .tmp/organism] [--out weights/organism] [--scenes 6000] [--seed 1001]
//   [--wordings fixed|train|fixed,train] [--tokenizer DIR]`
//
// Step 1 of building the model organism (step 2 is scripts/train_organism.py):
//   - renders a seeded synthetic training set (src/eval/synthetic.ts) into WORK/images and questions.jsonl;
//   - learns a small BPE tokenizer over its questions and answers (scripts/lib/llama-bpe.ts) and writes the
//     Hugging Face folder OUT without weights: config.json (LLaVA layout: CLIP ViT 96 wide x 4 layers on 64 px
//     images, Llama decoder 128 wide x 4 layers x 8 heads), preprocessor_config.json, generation_config.json,
//     tokenizer.json, tokenizer_config.json, special_tokens_map.json;
//   - tokenises every question (and sub-question) exactly as vlmscope will at evaluation time (LlavaProcessor
//     with the folder's chat template) followed by the answer and </s>, into WORK/train.jsonl for the trainer.
// Deterministic for given arguments.
//
// --wordings (src/eval/paraphrases.ts): fixed (the default, the original templates, byte-identical to the data made
// before wordings existed) or train (each question in one of the wordings that are not held out); a comma list such
// as fixed,train writes one training row per scene and set (the same scene, questions and answers, in each set's
// wordings; rows of a scene adjacent, so the trainer's held-out tail holds whole scenes). Held-out wordings are never
// written. --tokenizer DIR keeps the tokenizer and config of an existing folder (e.g. weights/organism, to continue
// training its weights on new wordings): no BPE is learnt, and OUT gets DIR's config and tokenizer files unchanged.

import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join, resolve, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { WORDING_SETS, type WordingSet } from '../src/eval/paraphrases.js';
import { COLOURS, SHAPES, iterateDataset, objectCovers, renderScene, sceneImagePath, type Scene, type SyntheticItem } from '../src/eval/synthetic.js';
import { encodePng } from '../src/io/image.js';
import { Tokenizer, type ChatMessage } from '../src/io/tokenizer.js';
import { mulberry32 } from '../src/eval/synthetic.js';
import { LlavaProcessor } from '../src/models/llava-processor.js';
import { parseLlavaConfig } from '../src/models/config.js';
import { parseClipProcessorConfig } from '../src/io/clip-processor.js';
import { tokenizerFiles, trainBpe } from './lib/llama-bpe.js';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');

/** The organism's architecture; the README of weights/organism records it too. */
export const ORGANISM_ARCH = {
  imageSize: 64,
  patchSize: 8,
  vision: { hidden: 96, intermediate: 384, layers: 4, heads: 4 },
  text: { hidden: 128, intermediate: 384, layers: 4, heads: 8 },
  vocab: 640,
};

async function main() {
  const { values } = parseArgs({
    options: {
      work: { type: 'string', default: join(ROOT, '.tmp/organism') },
      out: { type: 'string', default: join(ROOT, 'weights/organism') },
      scenes: { type: 'string', default: '6000' },
      seed: { type: 'string', default: '1001' },
      patch: { type: 'string', default: String(ORGANISM_ARCH.patchSize) },
      wordings: { type: 'string', default: 'fixed' },
      tokenizer: { type: 'string' },
    },
  });
  const wordingSets = values.wordings!.split(',') as WordingSet[];
  for (const w of wordingSets) {
    if (w !== 'fixed' && w !== 'train') throw new Error(`--wordings: each set must be fixed or train (held-out wordings are for evaluation only), got "${w}" (sets: ${WORDING_SETS.join(', ')})`);
  }
  if (new Set(wordingSets).size !== wordingSets.length) throw new Error(`--wordings: a set is repeated in "${values.wordings}"`);
  const work = resolve(values.work!);
  const out = resolve(values.out!);
  const scenes = Number(values.scenes);
  const seed = Number(values.seed);
  const patch = Number(values.patch);
  await mkdir(join(work, 'images'), { recursive: true });
  await mkdir(out, { recursive: true });

  // 1. Training scenes and questions (per wording set: the same scenes and answers, the sets' wordings).
  const items: SyntheticItem[] = [];
  const patchLabelsOf = new Map<string, { colour: number[]; shape: number[] }>();
  const streams = wordingSets.map((wordings) => iterateDataset({ seed, scenes, size: ORGANISM_ARCH.imageSize, wordings })[Symbol.iterator]());
  for (;;) {
    const got = streams.map((s) => s.next());
    const first = got[0]!;
    if (first.done) break;
    const s = first.value;
    await writeFile(join(work, sceneImagePath(s.id)), encodePng(renderScene(s.scene)));
    patchLabelsOf.set(sceneImagePath(s.id), patchLabels(s.scene, patch));
    for (const g of got) {
      if (g.done || g.value.id !== s.id) throw new Error(`internal: wording sets ${values.wordings} disagree on scene ${s.id}`);
      items.push(...g.value.items);
    }
  }
  await writeFile(join(work, 'questions.jsonl'), items.map((i) => JSON.stringify(i)).join('\n') + '\n');
  // One training row per (scene, wording set): `group` tells the sets of a scene apart.
  const flat = items.flatMap((it) => {
    const group = wordingSets.length > 1 ? `${it.image}#${it.wording === undefined ? 'fixed' : 'train'}` : it.image;
    return [
      { image: it.image, group, question: it.question, answer: it.answer, type: it.type },
      ...(it.sub_questions ?? []).map((q) => ({ image: it.image, group, question: q.question, answer: q.answer, type: `sub:${q.function}` })),
    ];
  });

  // 2. Tokenizer over what the model will read and write, or an existing folder's.
  const given = values.tokenizer === undefined ? null : await readTokenizerFolder(resolve(values.tokenizer));
  const bpe = given ? null : trainBpe([...new Set(flat.flatMap((f) => [`USER: ${f.question} ASSISTANT: ${f.answer}`]))], ORGANISM_ARCH.vocab - 2);
  const tok = given ?? tokenizerFiles(bpe!);

  // 3. The Hugging Face folder, weights to come from the trainer.
  const A = ORGANISM_ARCH;
  const config = given?.config ?? {
    architectures: ['LlavaForConditionalGeneration'],
    model_type: 'llava',
    image_token_index: tok.imageId,
    pad_token_id: tok.padId,
    projector_hidden_act: 'gelu',
    vision_feature_layer: -2,
    vision_feature_select_strategy: 'default',
    tie_word_embeddings: false,
    vocab_size: tok.size,
    torch_dtype: 'float16',
    text_config: {
      model_type: 'llama',
      hidden_size: A.text.hidden,
      intermediate_size: A.text.intermediate,
      num_hidden_layers: A.text.layers,
      num_attention_heads: A.text.heads,
      num_key_value_heads: A.text.heads,
      hidden_act: 'silu',
      rms_norm_eps: 1e-5,
      rope_theta: 10000.0,
      max_position_embeddings: 1024,
      vocab_size: tok.size,
      bos_token_id: 1,
      eos_token_id: 2,
      pad_token_id: tok.padId,
      tie_word_embeddings: false,
    },
    vision_config: {
      model_type: 'clip_vision_model',
      hidden_act: 'quick_gelu',
      hidden_size: A.vision.hidden,
      intermediate_size: A.vision.intermediate,
      num_hidden_layers: A.vision.layers,
      num_attention_heads: A.vision.heads,
      num_channels: 3,
      image_size: A.imageSize,
      patch_size: patch,
      projection_dim: A.vision.hidden,
      layer_norm_eps: 1e-5,
    },
  };
  const preprocessor = {
    do_convert_rgb: true,
    do_resize: true,
    size: { shortest_edge: A.imageSize },
    resample: 3,
    do_center_crop: true,
    crop_size: { height: A.imageSize, width: A.imageSize },
    do_rescale: true,
    rescale_factor: 1 / 255,
    do_normalize: true,
    image_mean: [0.48145466, 0.4578275, 0.40821073],
    image_std: [0.26862954, 0.26130258, 0.27577711],
    image_processor_type: 'CLIPImageProcessor',
    processor_class: 'LlavaProcessor',
  };
  const json = (v: unknown) => JSON.stringify(v, null, 2) + '\n';
  const files: Record<string, string> = {
    'config.json': given?.files['config.json'] ?? json(config),
    'preprocessor_config.json': given?.files['preprocessor_config.json'] ?? json(preprocessor),
    'generation_config.json': given?.files['generation_config.json'] ?? json({ bos_token_id: 1, eos_token_id: 2, pad_token_id: tok.padId }),
    'tokenizer.json': given?.files['tokenizer.json'] ?? json(tok.tokenizer),
    'tokenizer_config.json': given?.files['tokenizer_config.json'] ?? json(tok.tokenizerConfig),
    'special_tokens_map.json': given?.files['special_tokens_map.json'] ?? json(tok.specialTokensMap),
  };
  for (const [name, data] of Object.entries(files)) await writeFile(join(out, name), data);

  // 4. Training sequences, tokenised as vlmscope tokenises prompts. All questions of a scene (main and
  // sub-questions, in a seeded random order) form one multi-turn conversation over its image: the image is
  // encoded once for ~10 answers, and the model learns both the single-turn prompt (the first turn, exactly
  // what `generate`/`eval` send) and chained turns (what `collect` sends for CogVSR sub-question chains).
  const tokenizer = Tokenizer.fromJson(tok.tokenizer, tok.tokenizerConfig, tok.specialTokensMap);
  const processor = new LlavaProcessor(
    tokenizer,
    parseLlavaConfig(config),
    parseClipProcessorConfig(given ? JSON.parse(files['preprocessor_config.json']!) : preprocessor, 'preprocessor_config.json'),
  );
  const byGroup = new Map<string, typeof flat>();
  for (const f of flat) byGroup.set(f.group, [...(byGroup.get(f.group) ?? []), f]);
  const lines: string[] = [];
  let longest = 0;
  let sceneIndex = 0;
  let unknown = 0;
  for (const questions of byGroup.values()) {
    const image = questions[0]!.image;
    const order = shuffled(questions, seed * 7919 + sceneIndex++);
    const messages: ChatMessage[] = [];
    const spans: [number, number][] = [];
    const types: string[] = [];
    let ids: number[] = [];
    for (const q of order) {
      messages.push({ role: 'user', content: messages.length ? q.question : [{ type: 'image' }, { type: 'text', text: q.question }] });
      const prompt = processor.encodeText(tokenizer.applyChatTemplate(messages, { addGenerationPrompt: true }), 1).ids;
      messages.push({ role: 'assistant', content: q.answer });
      const full = processor.encodeText(tokenizer.applyChatTemplate(messages, { addGenerationPrompt: false }), 1).ids;
      if (!startsWith(prompt, ids) || !startsWith(full, prompt)) throw new Error(`internal: turn tokenisation is not incremental for ${image}`);
      spans.push([prompt.length, full.length]);
      types.push(q.type);
      ids = full;
    }
    longest = Math.max(longest, ids.length);
    unknown += ids.filter((t) => t === 0).length;
    const labels = patchLabels_(patchLabelsOf, image);
    // The same questions as single-turn prompts, exactly what `generate` / `eval` send: the trainer packs them
    // after one shared image prefix, each turn seeing only the prefix and itself, so no answer can be read off an
    // earlier turn's text (the conversations above leak: a sub-question's answer often gives the main one away).
    const singles = order.map((q) => {
      const msgs: ChatMessage[] = [{ role: 'user', content: [{ type: 'image' }, { type: 'text', text: q.question }] }];
      const prompt = processor.encodeText(tokenizer.applyChatTemplate(msgs, { addGenerationPrompt: true }), 1).ids;
      msgs.push({ role: 'assistant', content: q.answer });
      const full = processor.encodeText(tokenizer.applyChatTemplate(msgs, { addGenerationPrompt: false }), 1).ids;
      if (!startsWith(full, prompt)) throw new Error(`internal: single-turn tokenisation is not incremental for ${image}`);
      return { prompt, full };
    });
    let shared = singles[0]!.prompt.length;
    for (const t of singles) {
      let n = 0;
      while (n < shared && n < t.prompt.length && t.prompt[n] === singles[0]!.prompt[n]) n++;
      shared = n;
    }
    const single_prefix = singles[0]!.prompt.slice(0, shared);
    const single = singles.map((t) => ({ ids: t.full.slice(shared), answer_start: t.prompt.length - shared }));
    lines.push(JSON.stringify({ image, ids, spans, types, single_prefix, single, patch_colour: labels.colour, patch_shape: labels.shape }));
  }
  await writeFile(join(work, 'train.jsonl'), lines.join('\n') + '\n');
  if (unknown) throw new Error(`${unknown} training tokens are <unk>: the tokenizer cannot spell some question text`);
  const tokenizerNote = bpe ? `tokenizer ${tok.size} tokens (${bpe.merges.length} merges)` : `tokenizer of ${resolve(values.tokenizer!)} (${tok.size} tokens)`;
  const rowsNote = wordingSets.length > 1 ? ` in ${lines.length} rows (${values.wordings} wordings)` : wordingSets[0] === 'fixed' ? '' : ` (${values.wordings} wordings)`;
  console.log(
    `wrote ${scenes} scenes, ${items.length} questions (${flat.length} with sub-questions)${rowsNote} to ${work}; ${tokenizerNote}; ` +
      `longest conversation ${longest} tokens; folder ${out} (without weights)`,
  );
}

/** An existing folder's tokenizer and config files (--tokenizer), with what step 3 needs from them. */
async function readTokenizerFolder(dir: string) {
  const files: Record<string, string> = {};
  for (const name of ['config.json', 'preprocessor_config.json', 'generation_config.json', 'tokenizer.json', 'tokenizer_config.json', 'special_tokens_map.json']) {
    files[name] = await readFile(join(dir, name), 'utf8');
  }
  const config = JSON.parse(files['config.json']!);
  const tokenizer = JSON.parse(files['tokenizer.json']!);
  const size = Object.keys(tokenizer.model.vocab).length + (tokenizer.added_tokens ?? []).filter((t: { content: string }) => !(t.content in tokenizer.model.vocab)).length;
  if (size !== config.vocab_size) throw new Error(`--tokenizer ${dir}: tokenizer.json has ${size} tokens, config.json vocab_size ${config.vocab_size}`);
  return {
    files,
    config,
    tokenizer,
    tokenizerConfig: JSON.parse(files['tokenizer_config.json']!),
    specialTokensMap: JSON.parse(files['special_tokens_map.json']!),
    imageId: config.image_token_index as number,
    padId: config.pad_token_id as number,
    size,
  };
}

/**
 * Per-patch targets for the trainer's auxiliary vision loss (dense supervision that teaches the ViT to see
 * colour and shape per patch long before the sparse answer loss would): for each patch in row-major order, the
 * colour (index into COLOURS) and shape (index into SHAPES) of the object covering most of its pixels, if it
 * covers at least 1/8 of them; otherwise -1 (background, ignored by the colour loss; class "none" for shapes is
 * SHAPES.length). Not shipped in the model: only the trainer reads them.
 */
function patchLabels(scene: Scene, patch: number): { colour: number[]; shape: number[] } {
  const grid = scene.size / patch;
  const colour: number[] = [];
  const shape: number[] = [];
  for (let gy = 0; gy < grid; gy++) {
    for (let gx = 0; gx < grid; gx++) {
      let best = -1;
      let bestCount = 0;
      scene.objects.forEach((o, k) => {
        let n = 0;
        for (let py = gy * patch; py < (gy + 1) * patch; py++) for (let px = gx * patch; px < (gx + 1) * patch; px++) if (objectCovers(o, px, py)) n++;
        if (n > bestCount) [best, bestCount] = [k, n];
      });
      const o = best >= 0 && bestCount * 8 >= patch * patch ? scene.objects[best]! : null;
      colour.push(o ? COLOURS.indexOf(o.colour) : -1);
      shape.push(o ? SHAPES.indexOf(o.shape) : SHAPES.length);
    }
  }
  return { colour, shape };
}

function patchLabels_(map: Map<string, { colour: number[]; shape: number[] }>, image: string) {
  const labels = map.get(image);
  if (!labels) throw new Error(`internal: no patch labels for ${image}`);
  return labels;
}

function startsWith(a: number[], prefix: number[]): boolean {
  return prefix.length <= a.length && prefix.every((v, i) => a[i] === v);
}

/** Fisher-Yates with a seeded generator. */
function shuffled<T>(xs: T[], seed: number): T[] {
  const r = mulberry32(seed);
  const out = [...xs];
  for (let i = out.length - 1; i > 0; i--) {
    const j = Math.floor(r() * (i + 1));
    [out[i], out[j]] = [out[j], out[i]];
  }
  return out;
}

await main();
