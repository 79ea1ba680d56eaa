// `vlmscope generate`: a text prompt and an image in, the model's answer out (streamed to stdout as it is
// produced, or one JSON object with --json), the way the family's processor (LlavaProcessor, Qwen2VLProcessor,
// Idefics3Processor) + generate do it in Hugging Face.

import { Command, InvalidArgumentError } from 'commander';
import { intArg } from './args.js';
import { acquireGpu } from '../gpu/device.js';
import { GpuContext } from '../gpu/context.js';
import { loadImageFile, type RgbImage } from '../io/image.js';
import { nodeFolder } from '../io/checkpoint.js';
import { Tokenizer } from '../io/tokenizer.js';
import { parseInterventions } from '../spec/spec.js';
import { generate, type GenerateResult } from '../generate/generate.js';
import { adaptVis, parseAdaptVisTriple, type AdaptVisInfo, type AdaptVisOptions, type AdaptVisResult } from '../generate/adaptvis.js';
import { SamplingError, validateSampling, type SamplingOptions } from '../generate/sampling.js';
import { readJsonFile } from './files.js';
import { dtypeOption, loadModel, memoryBudgetOption, modelOption, checkFolder, eosIds } from './load.js';
import { UsageError } from './errors.js';

interface GenerateOptions {
  model: string;
  image?: string[];
  prompt: string;
  maxNewTokens: number;
  temperature?: number;
  topK?: number;
  topP?: number;
  repetitionPenalty?: number;
  seed?: number;
  stop?: string[];
  intervene?: string;
  adaptvis?: AdaptVisOptions;
  json?: boolean;
  verbose?: boolean;
  dtype?: string;
  memoryBudget?: number;
}

/** A commander parser for one sampling setting, with the library's own validation message. */
function samplingArg(key: keyof SamplingOptions, integer = false) {
  return (v: string): number => {
    const n = Number(v);
    if (v.trim() === '' || Number.isNaN(n)) throw new InvalidArgumentError(`expected a number`);
    if (integer && !Number.isInteger(n)) throw new InvalidArgumentError(`expected an integer`);
    try {
      validateSampling({ [key]: n });
    } catch (e) {
      if (e instanceof SamplingError) throw new InvalidArgumentError(e.message);
      throw e;
    }
    return n;
  };
}

const collect = (v: string, prev: string[] = []) => [...prev, v];

/** A commander parser for --adaptvis threshold,alpha_low,alpha_high (a bad value is a one-line usage error). */
export function adaptVisArg(v: string): AdaptVisOptions {
  try {
    return parseAdaptVisTriple(v);
  } catch (e) {
    throw new InvalidArgumentError((e as Error).message);
  }
}

export function generateCommand(): Command {
  return new Command('generate')
    .description('answer a text prompt about an image (greedy or sampled), streaming the text as it is produced')
    .addOption(modelOption())
    .option('--image <file>', 'PNG or JPEG image (repeat for several; each gets one image placeholder in the prompt: <image> for LLaVA and Idefics3 / SmolVLM, <|vision_start|><|image_pad|><|vision_end|> for Qwen)', collect)
    .requiredOption('--prompt <text>', 'the question or instruction; wrapped in the folder\'s chat template, else the family\'s format (LLaVA "USER: <image>\\n{prompt} ASSISTANT:", Qwen ChatML, SmolVLM "<|im_start|>User:<image>{prompt}<end_of_utterance>\\nAssistant:")')
    .option('--max-new-tokens <n>', 'most tokens to generate', intArg(0, 'a non-negative integer'), 64)
    .option('--temperature <t>', 'sampling temperature; 0 = greedy (default greedy)', samplingArg('temperature'))
    .option('--top-k <k>', 'sample from the k most likely tokens (turns sampling on, temperature 1 unless given)', samplingArg('topK', true))
    .option('--top-p <p>', 'sample from the smallest set of tokens with probability >= p (turns sampling on, temperature 1 unless given)', samplingArg('topP'))
    .option('--repetition-penalty <r>', 'Hugging Face repetition penalty over prompt and generated tokens (1 = none; 1.1-1.3 typical)', samplingArg('repetitionPenalty'))
    .option('--seed <s>', 'seed for sampling: the same seed gives the same text', intArg(0, 'a non-negative integer'))
    .option('--stop <string>', 'stop when the text contains this string, which is left out (repeat for several)', collect)
    .option('--intervene <file>', 'intervention spec (JSON), as for trace, applied to every step')
    .option(
      '--adaptvis <t,low,high>',
      'AdaptVis: a plain pass to the first token, then the answer with image temperature alpha_low if its top-1 probability (rounded to 2 decimals) is below the threshold t, else alpha_high (last prompt row, all layers and heads; e.g. 0.4,0.5,1.5)',
      adaptVisArg,
    )
    .option('--json', 'print one JSON object {text, token_ids, prompt_tokens, stopped_by, timings[, adaptvis]} instead of streaming')
    .addOption(dtypeOption())
    .addOption(memoryBudgetOption())
    .option('--verbose', 'print timings to stderr, and stack traces with errors')
    .addHelpText(
      'after',
      `
Generation stops at an end-of-sequence token (the tokenizer's, generation_config.json's eos_token_id, Qwen's
<|im_end|> / <|endoftext|> and SmolVLM's <end_of_utterance>), at a --stop string, or after --max-new-tokens.
Decoding is greedy (the argmax, computed on the GPU) unless --temperature > 0, --top-k or --top-p is given; then
tokens are sampled with Hugging Face's order: repetition penalty, temperature, top-k, top-p. Exit codes: 0 ok, 1 runtime error,
2 usage error.

Examples:
  vlmscope generate --model weights/tiny-llava --image tests/fixtures/tiny-llava/image.png --prompt "What is in the image?"
  vlmscope generate --model ./llava-1.5-7b-hf --image photo.jpg \\
    --prompt "Where is the dog in relation to the horse?" --max-new-tokens 128
  vlmscope generate --model ./llava-1.5-7b-hf --image photo.jpg --prompt "Describe the scene." \\
    --temperature 0.7 --top-p 0.9 --seed 42 --stop "." --json
  vlmscope generate --model ./llava-1.5-7b-hf --image photo.jpg --prompt "What color is the car?" \\
    --intervene ablate.json
  vlmscope generate --model ./llava-1.5-7b-hf --image photo.jpg \\
    --prompt "Where is the mug in relation to the plate? Answer with left, right, on or under." --adaptvis 0.4,0.5,1.5 --verbose
  vlmscope generate --model ./SmolVLM-256M-Instruct --image photo.jpg --prompt "Can you describe this image?" \\
    --memory-budget 4GiB --verbose`,
    )
    .action(async (_opts: GenerateOptions, cmd: Command) => {
      // --verbose may be taken by the top-level command: read it with the globals.
      await runGenerate(cmd.optsWithGlobals<GenerateOptions>());
    });
}

async function runGenerate(opts: GenerateOptions): Promise<void> {
  const sampling = samplingOptions(opts);
  const stopStrings = opts.stop ?? [];
  for (const s of stopStrings) if (s.length === 0) throw new UsageError('--stop needs a non-empty string');
  const interventionJson = opts.intervene ? await readJsonFile(opts.intervene, 'intervention spec') : null;
  await checkFolder(opts.model);
  const folder = nodeFolder(opts.model);
  const tokenizer = await Tokenizer.fromFolder(folder);
  const eosTokenIds = await eosIds(opts.model, tokenizer);
  const images: RgbImage[] = [];
  for (const f of opts.image ?? []) images.push(await loadImageFile(f));

  const gpu = await acquireGpu();
  try {
    const ctx = new GpuContext(gpu);
    const model = await loadModel(ctx, folder, opts);
    const interventions = interventionJson ? parseInterventions(interventionJson, model.dims, opts.intervene) : undefined;
    if (opts.adaptvis && interventions?.imageTemperature) {
      throw new UsageError(`--intervene ${opts.intervene} sets image_temperature, which --adaptvis sets itself: leave one out`);
    }
    const processor = model.createProcessor(tokenizer);
    if (opts.prompt.includes(processor.imageToken)) {
      throw new UsageError(`--prompt contains ${processor.imageToken}: leave it out, one is put in the prompt for each --image`);
    }
    const prompt = processor.formatPrompt(opts.prompt, images.length);
    const { ids, pixelValues } = processor.process(prompt, images);
    if (opts.verbose) process.stderr.write(`prompt: ${JSON.stringify(prompt)} (${ids.length} tokens)\n`);

    // Streamed text goes straight to stdout; a closed pipe (`| head`) ends the run quietly.
    process.stdout.on('error', (e: NodeJS.ErrnoException) => {
      if (e.code === 'EPIPE') process.exit(0);
    });
    const args = {
      ids,
      pixelValues,
      maxNewTokens: opts.maxNewTokens,
      sampling,
      eosTokenIds: [...eosTokenIds, ...processor.stopTokenIds],
      stopStrings,
      tokenizer,
      interventions,
      onText: opts.json ? undefined : (chunk: string) => process.stdout.write(chunk),
    };
    const r: GenerateResult | AdaptVisResult = opts.adaptvis ? await adaptVis(model, { ...args, ...opts.adaptvis }) : await generate(model, args);
    const gate = opts.adaptvis ? (r as AdaptVisResult).adaptvis : null;
    if (opts.json) process.stdout.write(`${JSON.stringify({ ...toJson(r, ids.length), ...(gate ? { adaptvis: adaptVisJson(gate) } : {}) })}\n`);
    else process.stdout.write('\n');
    if (opts.verbose && gate) process.stderr.write(`${adaptVisLine(gate)}\n`);
    if (opts.verbose) {
      const t = r.timings;
      process.stderr.write(
        `${r.tokenIds.length} tokens (stopped by ${r.stoppedBy}); prefill ${t.prefillMs.toFixed(1)} ms, ` +
          `decode ${t.decodeMs.toFixed(1)} ms for ${t.decodeSteps} steps (${t.tokensPerSecond.toFixed(1)} tokens/s)\n`,
      );
    }
  } finally {
    gpu.destroy();
  }
}

/** Sampling is on with --temperature > 0, or with --top-k / --top-p (temperature 1 unless given). */
function samplingOptions(o: GenerateOptions): SamplingOptions {
  const sampled = o.temperature === undefined && (o.topK !== undefined || o.topP !== undefined);
  const opts: SamplingOptions = {
    temperature: sampled ? 1 : o.temperature,
    topK: o.topK,
    topP: o.topP,
    repetitionPenalty: o.repetitionPenalty,
    seed: o.seed,
  };
  try {
    return validateSampling(opts);
  } catch (e) {
    throw e instanceof SamplingError ? new UsageError(e.message) : e;
  }
}

/** The gate's numbers as --json prints them. */
export function adaptVisJson(a: AdaptVisInfo) {
  const reuse = a.pass2.reuse;
  return {
    confidence: a.confidence,
    raw_confidence: a.rawConfidence,
    threshold: a.threshold,
    alpha_low: a.alphaLow,
    alpha_high: a.alphaHigh,
    branch: a.branch,
    alpha: a.alpha,
    first_token: a.pass1.firstToken,
    first_token_text: a.pass1.firstTokenText,
    reuse: reuse && { reused: reuse.reused, from_row: reuse.fromRow, rows: reuse.rows, prompt_rows: reuse.promptRows, vision: reuse.vision, ...(reuse.reason ? { reason: reuse.reason } : {}) },
    pass1_ms: a.pass1.prefillMs + a.pass1.decodeMs,
    pass2_ms: a.pass2.prefillMs + a.pass2.decodeMs,
    cost_ratio: a.costRatio,
  };
}

/** One line on the gate and what pass 2 recomputed (--verbose). */
export function adaptVisLine(a: AdaptVisInfo): string {
  const r = a.pass2.reuse;
  const work = r
    ? r.reused
      ? `pass 2 recomputed ${r.rows} of ${r.promptRows} prompt rows (KV cache of rows 0..${r.fromRow - 1} and the image features kept)`
      : `pass 2 recomputed everything (${r.reason})`
    : 'pass 2 recomputed everything (reuse off)';
  return (
    `adaptvis: confidence ${a.confidence} ${a.branch === 'low' ? '<' : '>='} threshold ${a.threshold} -> alpha ${a.alpha} (${a.branch}); ${work}; ` +
    `${(a.pass1.prefillMs + a.pass1.decodeMs).toFixed(1)} + ${(a.pass2.prefillMs + a.pass2.decodeMs).toFixed(1)} ms, about ${a.costRatio.toFixed(2)}x a plain generation`
  );
}

export function toJson(r: GenerateResult, promptTokens: number) {
  return {
    text: r.text,
    token_ids: r.tokenIds,
    prompt_tokens: promptTokens,
    stopped_by: r.stoppedBy,
    timings: {
      prefill_ms: r.timings.prefillMs,
      decode_ms: r.timings.decodeMs,
      decode_steps: r.timings.decodeSteps,
      tokens_per_second: r.timings.tokensPerSecond,
    },
  };
}
