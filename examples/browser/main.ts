// vlmscope in a page, with the browser entry: the organism answers the scene question, then again with the heads
// of text layer 1 that read the image ablated, capturing z and attention patterns of the last prompt position in
// both runs (the browser twin of ../capture-ablation.ts). The model and the image come over HTTP: urlFolder reads
// config, tokenizer and weights from a served folder with Range requests.
//
// Bundle: `npx esbuild main.ts --bundle --format=esm --outfile=main.js` (any bundler; nothing from Node is pulled
// in), then open index.html. The page sets body[data-state] to "done" (or "error") and the answers as JSON in
// #out's data-answers, which the package test reads.
import {
  GpuContext,
  Tokenizer,
  acquireGpu,
  decodeImage,
  eosTokenIds,
  imageMass,
  imageSpans,
  loadModel,
  parseCapture,
  parseInterventions,
  urlFolder,
  type InterventionSpec,
} from 'vlmscope/browser';

const params = new URLSearchParams(location.search);
const modelUrl = new URL(params.get('model') ?? 'node_modules/vlmscope/weights/organism/', location.href).href;
const imageUrl = new URL(params.get('image') ?? 'node_modules/vlmscope/examples/scene.png', location.href).href;
const question = 'Where is the green circle in relation to the orange square? Answer with left, right, above or below.';

const out = document.getElementById('out')!;
const log = (line: string) => {
  out.textContent = out.textContent === 'loading…' ? line : `${out.textContent}\n${line}`;
};

async function main(): Promise<void> {
  (document.getElementById('image') as HTMLImageElement).src = imageUrl;
  const res = await fetch(imageUrl);
  if (!res.ok) throw new Error(`GET ${imageUrl}: HTTP ${res.status}`);
  const image = decodeImage(new Uint8Array(await res.arrayBuffer()), imageUrl);

  const gpu = await acquireGpu();
  try {
    const folder = urlFolder(modelUrl);
    const model = await loadModel(new GpuContext(gpu), folder);
    const tokenizer = await Tokenizer.fromFolder(folder);
    const processor = model.createProcessor(tokenizer);
    const { ids, pixelValues } = processor.process(processor.formatPrompt(question, 1), [image]);
    const stopTokens = [...(await eosTokenIds(folder, tokenizer)), ...processor.stopTokenIds];
    log(`${model.type} from ${modelUrl} on ${gpu.adapterName}\n${question}`);

    // As in ../capture-ablation.ts: the heads of text layer 1 that look most at the image (last prompt position)
    // are zeroed in a second run; both capture z there and the patterns of layers 1 and 2.
    const layer = 1;
    const imageTokens = imageSpans(ids, model.imageTokenId);
    const capture = parseCapture(
      { z: { positions: 'last' }, pattern: [layer, layer + 1].map((l) => ({ tower: 'text', layer: l, rows: [-1] })) },
      model.dims,
    );
    const fmt = (xs: readonly number[]) => xs.map((x) => x.toFixed(2)).join(' ');
    const answers: Record<string, number[]> = {};
    let ablation: InterventionSpec | undefined;
    for (const name of ['plain', 'ablated']) {
      const r = await model.run({ ids, pixelValues, capture, interventions: ablation, maxNewTokens: 8, stopTokens });
      answers[name] = r.tokens ?? [];
      const [share, next] = imageMass(r.pattern, imageTokens) as [number[], number[]];
      if (!ablation) {
        const heads = share.flatMap((s, head) => (s > 0.5 ? [head] : []));
        ablation = parseInterventions({ head_scale: heads.map((head) => ({ tower: 'text', layer, head, scale: 0 })) }, model.dims);
        log(`layer ${layer} image share per head: ${fmt(share)}; ablated next: heads ${heads.join(', ')}`);
      }
      log(
        `${name}: "${tokenizer.decode(answers[name], { skipSpecialTokens: true }).trim()}", z ${JSON.stringify(r.z!.shape)}, ` +
          `layer ${layer + 1} image share per head: ${fmt(next)}`,
      );
    }
    out.dataset.answers = JSON.stringify(answers);
    document.body.dataset.state = 'done';
  } finally {
    gpu.destroy();
  }
}

main().catch((e: unknown) => {
  log(`error: ${e instanceof Error ? e.message : String(e)}`);
  document.body.dataset.state = 'error';
});
