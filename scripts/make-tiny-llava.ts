// `npx tsx scripts/make-tiny-llava.ts [OUT_DIR]`: writes weights/tiny-llava/ (or OUT_DIR), a small LLaVA-layout
// Hugging Face folder whose whole path from a text prompt to a text answer runs on a fresh machine:
//   - config.json, preprocessor_config.json, generation_config.json, model.safetensors (random f16 weights:
//     CLIP ViT 32 wide x 2 layers on 28 px images with 14 px patches -> 4 image tokens; Llama decoder 64 wide x
//     2 layers, 4 heads, 2 KV heads);
//   - a real tokenizer.json in the Llama/SentencePiece-BPE layout (Prepend + Replace normalizer, BPE with byte
//     fallback over the 256 <0xNN> tokens, Replace/ByteFallback/Fuse/Strip decoder), whose merges are learnt
//     here by a small deterministic BPE trainer over a built-in English corpus of spatial-reasoning phrases;
//     <image> and <pad> are added special tokens at the end of the vocabulary, as in llava-hf checkpoints;
//   - tokenizer_config.json (with a LLaVA-1.5 chat template), special_tokens_map.json, README.md.
// Everything is deterministic: the same bytes on every run.

import { mkdir, writeFile } from 'node:fs/promises';
import { join, resolve, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { randomLlava, type RandomLlavaSpec } from '../src/models/random-llava.js';
import { SPACE, tokenizerFiles, trainBpe } from './lib/llama-bpe.js';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const SEED = 20240917;
/** Total tokenizer size, special and added tokens included. */
const TARGET_VOCAB = 480;

// ---------------------------------------------------------------------------------------------------------------
// Corpus

/** Mulberry32, the generator the random weights use too. */
function mulberry(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const COLOURS = ['red', 'blue', 'green', 'yellow', 'orange', 'purple', 'black', 'white', 'brown', 'pink', 'gray'];
const SHAPES = ['circle', 'square', 'triangle', 'star', 'cube', 'ball', 'box', 'cup', 'dog', 'cat', 'horse', 'car', 'tree', 'chair', 'table', 'book', 'lamp', 'bottle'];
const RELATIONS = [
  'to the left of',
  'to the right of',
  'above',
  'below',
  'on top of',
  'under',
  'behind',
  'in front of',
  'next to',
  'near',
  'far from',
  'inside',
];
const NUMBERS = ['one', 'two', 'three', 'four', 'five', 'six', 'seven', 'eight', 'nine', 'ten'];
const FIXED = [
  'USER: What is in this image? ASSISTANT: A red circle and a blue square.',
  'USER: Describe the picture. ASSISTANT: There is a green triangle on the left and a yellow star on the right.',
  'Where is the dog in relation to the horse?',
  'The dog is to the left of the horse.',
  'Answer with left, right, above or below.',
  'Look at the image and answer the question.',
  'Which object is closer to the camera?',
  'The cat is sitting on the table, next to the lamp.',
  'Yes, it is. No, it is not. I do not know.',
  'The scene shows a small room with a chair, a table and a book.',
  'What colour is the shape at the top of the image?',
  'Count the objects in the picture.',
  'A photo of a car parked behind a tree.',
  'The ball is between the box and the cup.',
  'Is the answer yes or no?',
];

function corpus(): string[] {
  const rand = mulberry(SEED);
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rand() * xs.length)]!;
  const cap = (s: string) => s[0]!.toUpperCase() + s.slice(1);
  const lines = [...FIXED];
  for (let i = 0; i < 400; i++) {
    const [c1, s1, c2, s2, rel] = [pick(COLOURS), pick(SHAPES), pick(COLOURS), pick(SHAPES), pick(RELATIONS)];
    switch (i % 8) {
      case 0:
        lines.push(`Where is the ${c1} ${s1} in relation to the ${c2} ${s2}?`);
        break;
      case 1:
        lines.push(`The ${c1} ${s1} is ${rel} the ${c2} ${s2}.`);
        break;
      case 2:
        lines.push(`Is the ${c1} ${s1} ${rel} the ${c2} ${s2}? ${pick(['Yes', 'No'])}.`);
        break;
      case 3:
        lines.push(`What is ${rel} the ${c2} ${s2}? The ${c1} ${s1}.`);
        break;
      case 4:
        lines.push(`How many ${s1}s are there? There are ${pick(NUMBERS)} ${c1} ${s1}s.`);
        break;
      case 5:
        lines.push(`${cap(c1)} ${s1}, ${c2} ${s2}: which one is ${pick(['left', 'right', 'above', 'below'])}?`);
        break;
      case 6:
        lines.push(`USER: Where is the ${c1} ${s1}? ASSISTANT: It is ${rel} the ${c2} ${s2}.`);
        break;
      default:
        lines.push(`A ${c1} ${s1} and a ${c2} ${s2} are in the picture.`);
    }
  }
  return lines;
}

// ---------------------------------------------------------------------------------------------------------------

const README = (size: number, imageId: number, padId: number, merges: number) => `# tiny-llava (generated)

A small LLaVA-layout Hugging Face folder with **random weights**: its answers are meaningless. It exists so the
whole path from a text prompt and an image to a text answer (tokenizer, chat template, image-token expansion,
CLIP preprocessing, vision tower, projector, decoder, sampling, detokenization) runs in tests and on a fresh
machine without a download.

Made by \`npx tsx scripts/make-tiny-llava.ts\` (deterministic: the same bytes on every run; seed ${SEED}).

- \`model.safetensors\`: f16, legacy llava-hf tensor names. CLIP ViT 32 wide, 2 layers, 2 heads, 28x28 input,
  patch 14 (4 image tokens per image, "default" feature selection, vision_feature_layer -2); GELU projector;
  Llama decoder 64 wide, 2 layers, 4 heads, 2 KV heads, SiLU MLP 128, vocabulary ${size}.
- \`tokenizer.json\`: a real Llama/SentencePiece-style BPE tokenizer (normalizer Prepend "▁" + Replace " "->"▁",
  BPE with byte_fallback over the 256 <0xNN> tokens, decoder Replace/ByteFallback/Fuse/Strip). Its ${merges}
  merges were learnt by the script's BPE trainer over a built-in corpus of spatial-reasoning phrases. Ids:
  <unk>=0, <s>=1, </s>=2, <0x00>..<0xFF>=3..258, then the alphabet and merged pieces; <image>=${imageId} and
  <pad>=${padId} are added special tokens at the end (config.json image_token_index / pad_token_id).
- \`tokenizer_config.json\`: add_bos_token true, add_eos_token false, and a chat template that renders the
  LLaVA-1.5 format \`USER: <image>\\n{prompt} ASSISTANT:\`.
`;

async function main() {
  const out = resolve(process.argv[2] ?? join(ROOT, 'weights/tiny-llava'));
  const bpe = trainBpe(corpus(), TARGET_VOCAB - 2);
  const tok = tokenizerFiles(bpe);
  const spec: RandomLlavaSpec = {
    seed: SEED,
    dtype: 'F16',
    vision: { hidden: 32, intermediate: 128, layers: 2, heads: 2, imageSize: 28, patchSize: 14 },
    text: { hidden: 64, intermediate: 128, layers: 2, heads: 4, kvHeads: 2, vocab: tok.size },
    imageTokenIndex: tok.imageId,
  };
  const files = randomLlava(spec);
  const config = JSON.parse(files['config.json']) as Record<string, unknown> & { text_config: Record<string, unknown> };
  if (config.image_token_index !== tok.imageId || config.pad_token_id !== tok.padId) {
    throw new Error('internal: random-llava put the image/pad ids elsewhere than the tokenizer');
  }
  Object.assign(config.text_config, { bos_token_id: 1, eos_token_id: 2, pad_token_id: tok.padId });
  config.torch_dtype = 'float16';
  const json = (v: unknown) => JSON.stringify(v, null, 2) + '\n';
  const written: Record<string, string | Uint8Array> = {
    'config.json': json(config),
    'preprocessor_config.json': files['preprocessor_config.json'] + '\n',
    'generation_config.json': json({ bos_token_id: 1, eos_token_id: 2, pad_token_id: tok.padId }),
    'model.safetensors': files['model.safetensors'],
    'tokenizer.json': json(tok.tokenizer),
    'tokenizer_config.json': json(tok.tokenizerConfig),
    'special_tokens_map.json': json(tok.specialTokensMap),
    'README.md': README(tok.size, tok.imageId, tok.padId, bpe.merges.length),
  };
  await mkdir(out, { recursive: true });
  let bytes = 0;
  for (const [name, data] of Object.entries(written)) {
    await writeFile(join(out, name), data);
    bytes += typeof data === 'string' ? Buffer.byteLength(data) : data.byteLength;
  }
  console.log(
    `wrote ${out}: ${Object.keys(written).length} files, ${(bytes / 1024).toFixed(0)} KiB; ` +
      `vocabulary ${tok.size} (${bpe.merges.length} merges), <image>=${tok.imageId}, <pad>=${tok.padId}`,
  );
}

await main();
