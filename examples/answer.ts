// Answer a question about an image: the shipped organism (weights/organism, a small LLaVA trained on synthetic
// spatial scenes) reads examples/scene.png and streams its answer ("right").
//
// Run it from a project where vlmscope is installed (`npm install vlmscope`; the paths below are inside the
// package), e.g. `npx -p typescript tsc --strict --module nodenext --target es2022 answer.ts && node answer.js`.
// Any supported Hugging Face folder (LLaVA-1.5, Qwen2-VL, Qwen2.5-VL, SmolVLM) works the same way.
import { GpuContext, Tokenizer, acquireGpu, eosTokenIds, generate, loadImageFile, loadModel, nodeFolder } from 'vlmscope';

const folder = nodeFolder('node_modules/vlmscope/weights/organism');
const image = await loadImageFile('node_modules/vlmscope/examples/scene.png');
const question = 'Where is the green circle in relation to the orange square? Answer with left, right, above or below.';

const gpu = await acquireGpu();
try {
  const model = await loadModel(new GpuContext(gpu), folder);
  const tokenizer = await Tokenizer.fromFolder(folder);
  const processor = model.createProcessor(tokenizer);
  // The prompt through the folder's chat template (or the family's format), the image preprocessed and its
  // placeholder expanded to the image's token count, then tokenized.
  const { ids, pixelValues } = processor.process(processor.formatPrompt(question, 1), [image]);
  const result = await generate(model, {
    ids,
    pixelValues,
    tokenizer,
    maxNewTokens: 16,
    eosTokenIds: [...(await eosTokenIds(folder, tokenizer)), ...processor.stopTokenIds],
  });
  console.log(`${question}\n-> ${result.text.trim()} (${result.tokenIds.length} tokens, stopped by ${result.stoppedBy})`);
} finally {
  gpu.destroy();
}
