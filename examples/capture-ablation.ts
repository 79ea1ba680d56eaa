// Capture per-head outputs `z` and attention patterns, plain and under an ablation. The organism answers the scene
// question once as trained; the heads of text layer 1 that put most of their attention (last prompt position) on
// the image are picked from that run's pattern, and the question is run again with those heads zeroed (head_scale
// 0, the intervention spec of `vlmscope generate --intervene`). Both runs capture z at the last prompt position
// ([layers, heads, head dim]), the attention patterns of layers 1 and 2 at that position and the logits there:
// the script prints how far z moved per layer (layer 1's own z holds the zeroed heads; later layers' z move
// through the residual stream), the image-attention share of layer 2's heads and the probability of the first
// answer token.
//
// Run it from a project where vlmscope is installed, like answer.ts.
import {
  GpuContext,
  Tokenizer,
  acquireGpu,
  eosTokenIds,
  imageMass,
  imageSpans,
  loadImageFile,
  loadModel,
  nodeFolder,
  parseCapture,
  parseInterventions,
  type InterventionSpec,
  type RunResult,
} from 'vlmscope';

const folder = nodeFolder('node_modules/vlmscope/weights/organism');
const image = await loadImageFile('node_modules/vlmscope/examples/scene.png');
const question = 'Where is the green circle in relation to the orange square? Answer with left, right, above or below.';
const ABLATED_LAYER = 1;

const gpu = await acquireGpu();
try {
  const model = await loadModel(new GpuContext(gpu), folder);
  const tokenizer = await Tokenizer.fromFolder(folder);
  const processor = model.createProcessor(tokenizer);
  const { ids, pixelValues } = processor.process(processor.formatPrompt(question, 1), [image]);
  const stopTokens = [...(await eosTokenIds(folder, tokenizer)), ...processor.stopTokenIds];
  const imageTokens = imageSpans(ids, model.imageTokenId);

  // Specs are plain JSON (what `vlmscope trace --capture / --intervene` read from files), checked against the model.
  const capture = parseCapture(
    {
      logits: 'last',
      z: { positions: 'last' },
      pattern: [ABLATED_LAYER, ABLATED_LAYER + 1].map((layer) => ({ tower: 'text', layer, rows: [-1] })),
    },
    model.dims,
  );
  const run = (interventions?: InterventionSpec) =>
    model.run({ ids, pixelValues, capture, interventions, maxNewTokens: 8, stopTokens });

  const plain = await run();
  // Image-attention share of each head of the ablated layer at the last prompt position (sums to at most 1).
  const share = imageMass([plain.pattern[0]!], imageTokens)[0]!;
  const heads = share.flatMap((s, head) => (s > 0.5 ? [head] : []));
  const ablation = parseInterventions(
    { head_scale: heads.map((head) => ({ tower: 'text', layer: ABLATED_LAYER, head, scale: 0 })) },
    model.dims,
  );
  const ablated = await run(ablation);

  const answer = (r: RunResult) => tokenizer.decode(r.tokens ?? [], { skipSpecialTokens: true }).trim();
  const firstToken = plain.tokens![0]!;
  const probability = (r: RunResult) => {
    const logits = r.logits!.data; // [vocab] at the last prompt position
    const max = Math.max(...logits);
    const sum = logits.reduce((a, x) => a + Math.exp(x - max), 0);
    return Math.exp(logits[firstToken]! - max) / sum;
  };
  const [layers, headCount, headDim] = plain.z!.shape as [number, number, number];
  const zMoved = Array.from({ length: layers }, (_, l) => {
    const at = l * headCount * headDim;
    const a = plain.z!.data.subarray(at, at + headCount * headDim);
    const b = ablated.z!.data.subarray(at, at + headCount * headDim);
    return Math.hypot(...a.map((x, i) => x - b[i]!));
  });
  const fmt = (xs: readonly number[]) => xs.map((x) => x.toFixed(2)).join(' ');

  console.log(`image-attention share of layer ${ABLATED_LAYER}'s heads: ${fmt(share)}; ablating heads ${heads.join(', ')}`);
  for (const [name, r] of [['plain', plain], ['ablated', ablated]] as const) {
    console.log(
      `${name}: answer "${answer(r)}", p("${tokenizer.decode([firstToken])}") = ${probability(r).toFixed(3)}, ` +
        `layer ${ABLATED_LAYER + 1} image share per head: ${fmt(imageMass([r.pattern[1]!], imageTokens)[0]!)}`,
    );
  }
  console.log(`z ${JSON.stringify(plain.z!.shape)}: |z_ablated - z_plain| per layer: ${fmt(zMoved)}`);
} finally {
  gpu.destroy();
}
