// The attention lab page: wires the engine (engine.ts), the head grid (head-grid.ts) and the image view
// (view.ts) to the DOM of index.html. State lives here; every change of interventions re-runs the last question.
//
// `document.body.dataset.state` tells scripts and tests where the page is: starting | loading | ready |
// running | error | lost | no-webgpu. `window.vlmscopeLab` exposes the last result and a few test hooks.

import { cachedUrlFolder, decodeImage, fileListFolder, fmtBytes, imageMass, NoGpuError, type FolderSource, type RgbImage, type VlmModel } from '../src/index.js';
import { LabEngine, headKey, type AskResult, type HeadScales } from './engine.js';
import { nextScale, parseProbeFile, renderGrid, renderLegend, type GridState, type ProbeColouring } from './head-grid.js';
import { drawImage, GLOBAL_VIEW_BOX, heatmapValues, imageFromFile, sceneSide, syntheticScene, tiledHeatmaps } from './view.js';

const $ = <T extends HTMLElement>(id: string): T => {
  const el = document.getElementById(id);
  if (!el) throw new Error(`index.html has no #${id}`);
  return el as T;
};

const params = new URLSearchParams(location.search);
const DEFAULT_MODEL = new URL(params.get('model') ?? '../weights/organism/', location.href).href;
const DEFAULT_IMAGE = new URL(params.get('image') ?? '../examples/scene.png', location.href).href;
/** `?memory=BYTES`: the GPU memory a model may use (a model that needs more is refused before loading). */
const MEMORY_BUDGET = params.has('memory') ? Number(params.get('memory')) : undefined;
const DEFAULT_QUESTION_URL = new URL('../examples/scene-question.txt', location.href).href;

/** The model families' names as people write them (the model-info line). */
const FAMILY_NAMES: Record<VlmModel['type'], string> = { llava: 'LLaVA', qwen2_vl: 'Qwen2-VL', qwen2_5_vl: 'Qwen2.5-VL', idefics3: 'Idefics3', smolvlm: 'SmolVLM' };

type PageState = 'starting' | 'loading' | 'ready' | 'running' | 'error' | 'lost' | 'no-webgpu';

const ui = {
  status: $('status'),
  alert: $('alert'),
  alertText: $('alert-text'),
  restart: $<HTMLButtonElement>('restart'),
  modelUrl: $<HTMLInputElement>('model-url'),
  loadUrl: $<HTMLButtonElement>('load-url'),
  modelFiles: $<HTMLInputElement>('model-files'),
  progress: $<HTMLProgressElement>('load-progress'),
  modelInfo: $('model-info'),
  view: $<HTMLCanvasElement>('view'),
  tileLines: $('tile-lines'),
  globalBox: $('global-box'),
  globalView: $<HTMLCanvasElement>('global-view'),
  globalCaption: $('global-caption'),
  drop: $('drop'),
  imageFile: $<HTMLInputElement>('image-file'),
  randomScene: $<HTMLButtonElement>('random-scene'),
  sceneSeed: $<HTMLInputElement>('scene-seed'),
  showHeatmap: $<HTMLInputElement>('show-heatmap'),
  askForm: $<HTMLFormElement>('ask-form'),
  question: $<HTMLTextAreaElement>('question'),
  ask: $<HTMLButtonElement>('ask'),
  answer: $<HTMLOutputElement>('answer'),
  answerMeta: $('answer-meta'),
  caption: $('heatmap-caption'),
  layerSelect: $<HTMLSelectElement>('layer-select'),
  headSelect: $<HTMLSelectElement>('head-select'),
  gridMode: $<HTMLSelectElement>('grid-mode'),
  grid: $<HTMLTableElement>('head-grid'),
  temperature: $<HTMLInputElement>('temperature'),
  temperatureValue: $<HTMLOutputElement>('temperature-value'),
  resetHeads: $<HTMLButtonElement>('reset-heads'),
  probeFile: $<HTMLInputElement>('probe-file'),
  probeInfo: $('probe-info'),
  legend: $('legend'),
  spec: $('spec'),
  limits: $('limits'),
};

let engine: LabEngine | null = null;
let modelSource: FolderSource | null = null;
let image: RgbImage | null = null;
let last: AskResult | null = null;
let probe: ProbeColouring | null = null;
const scales: HeadScales = new Map();
let selected: { layer: number; head: number | null } = { layer: 0, head: null };
let runId = 0;
let completedRuns = 0;

function setState(s: PageState, status?: string): void {
  document.body.dataset.state = s;
  if (status !== undefined) ui.status.textContent = status;
  const busy = s !== 'ready';
  ui.ask.disabled = busy;
  ui.loadUrl.disabled = s === 'loading' || s === 'running' || s === 'no-webgpu' || s === 'lost';
}

function showAlert(text: string, restart = false): void {
  ui.alert.hidden = false;
  ui.alertText.textContent = text;
  ui.restart.hidden = !restart;
}

function hideAlert(): void {
  ui.alert.hidden = true;
}

// ---------------------------------------------------------------------------------------------------------------
// Engine and model

async function startEngine(): Promise<boolean> {
  setState('starting', 'Starting WebGPU…');
  try {
    engine = await LabEngine.create(onDeviceLost);
  } catch (e) {
    const missing = e instanceof NoGpuError || typeof navigator === 'undefined' || !('gpu' in navigator);
    setState(missing ? 'no-webgpu' : 'error', missing ? 'WebGPU is not available' : 'Could not start WebGPU');
    showAlert(
      missing
        ? 'This browser offers no WebGPU. Use a recent Chrome or Edge (or Chromium with --enable-unsafe-webgpu), on a secure origin (https or localhost).'
        : `Could not start WebGPU: ${(e as Error).message}`,
    );
    return false;
  }
  const l = engine.gpu.limits;
  ui.limits.textContent =
    `Adapter: ${engine.gpu.adapterName}. Limits: max buffer ${fmtBytes(l.maxBufferSize)}, max storage binding ` +
    `${fmtBytes(l.maxStorageBufferBindingSize)}, ${l.maxStorageBuffersPerShaderStage} storage buffers per stage, ` +
    `${l.maxComputeInvocationsPerWorkgroup} invocations per workgroup. Weights larger than one binding are split.`;
  return true;
}

function onDeviceLost(reason: string): void {
  runId++;
  setState('lost', 'GPU device lost');
  showAlert(`The GPU device was lost (${reason}). Your image, question and interventions are kept; restart the engine to go on.`, true);
}

async function restartEngine(): Promise<void> {
  hideAlert();
  engine?.destroy();
  engine = null;
  if (!(await startEngine())) return;
  if (modelSource) await loadModel(modelSource);
}

async function loadModel(source: FolderSource): Promise<void> {
  if (!engine) return;
  hideAlert();
  setState('loading', `Loading ${source.name}…`);
  ui.progress.hidden = false;
  ui.progress.value = 0;
  last = null;
  try {
    await engine.load(
      source,
      (done, total) => {
        ui.progress.value = total > 0 ? done / total : 1;
        ui.status.textContent = `Loading weights: ${fmtBytes(done)} / ${fmtBytes(total)}`;
      },
      MEMORY_BUDGET,
    );
  } catch (e) {
    ui.progress.hidden = true;
    setState('error', 'Model not loaded');
    showAlert(`Could not load ${source.name}: ${(e as Error).message}`);
    return;
  }
  modelSource = source;
  ui.progress.hidden = true;
  const cached = 'cachedFiles' in source ? (source as { cachedFiles: Set<string> }).cachedFiles.size : 0;
  const m = engine.model!;
  ui.modelInfo.textContent =
    `${source.name}: ${engine.layers} text layers x ${engine.heads} heads, vision ${m.dims.vision.layers} layers x ${m.dims.vision.heads} heads (${FAMILY_NAMES[m.type]}, ${m.type})` +
    (cached ? ` (${cached} files from the browser cache)` : '');
  ui.modelInfo.dataset.family = m.type;
  ui.modelInfo.dataset.cachedFiles = String(cached);
  scales.clear();
  selected = { layer: engine.layers - 1, head: null };
  fillSelects();
  setState('ready', 'Ready');
  refreshGrid();
  if (image && ui.question.value.trim()) await run();
}

function fillSelects(): void {
  ui.layerSelect.replaceChildren(...Array.from({ length: engine!.layers }, (_, l) => new Option(`L${l}`, String(l))));
  ui.headSelect.replaceChildren(new Option('mean of heads', 'mean'), ...Array.from({ length: engine!.heads }, (_, h) => new Option(`H${h}`, String(h))));
  ui.layerSelect.value = String(selected.layer);
  ui.headSelect.value = selected.head === null ? 'mean' : String(selected.head);
}

// ---------------------------------------------------------------------------------------------------------------
// Running a question

async function run(): Promise<void> {
  if (!engine?.model || !image) return;
  const id = ++runId;
  hideAlert();
  setState('running', 'Running…');
  ui.answer.textContent = '';
  let streamed = '';
  try {
    const r = await engine.ask({
      image,
      question: ui.question.value,
      heads: scales,
      imageTemperature: Number(ui.temperature.value),
      onText: (chunk) => {
        if (id !== runId) return;
        streamed += chunk;
        ui.answer.textContent = streamed;
      },
    });
    if (id !== runId) return;
    last = r;
    ui.answer.textContent = r.text;
    ui.answer.dataset.tokens = JSON.stringify(r.tokenIds);
    ui.answer.dataset.runs = String(++completedRuns);
    const imageTokens = r.spans.reduce((n, sp) => n + sp.length, 0);
    const tiles = r.tiles ? `${r.spans.length} tile${r.spans.length === 1 ? '' : 's'}${r.tiles.global ? `: ${r.tiles.rows}x${r.tiles.cols} crops + global` : ''}, ` : '';
    ui.answerMeta.textContent = `${r.tokenIds.length} token${r.tokenIds.length === 1 ? '' : 's'} in ${r.ms.toFixed(0)} ms; prompt ${r.promptIds.length} tokens (${tiles}${imageTokens} image tokens)`;
    ui.spec.textContent = JSON.stringify(r.interventionJson, null, 1);
    setState('ready', 'Ready');
    redraw();
    refreshGrid();
  } catch (e) {
    if (id !== runId) return;
    if (engine?.gpu.lost) return; // onDeviceLost already said so
    setState('ready', 'Ready');
    showAlert((e as Error).message);
  }
}

let rerunTimer: ReturnType<typeof setTimeout> | undefined;
/** Interventions changed: re-run the current question shortly (slider drags coalesce). */
function rerunSoon(): void {
  refreshGrid();
  clearTimeout(rerunTimer);
  if (!last) return;
  rerunTimer = setTimeout(() => void runWhenIdle(), 150);
}

async function runWhenIdle(): Promise<void> {
  while (document.body.dataset.state === 'running') await new Promise((r) => setTimeout(r, 50));
  if (document.body.dataset.state === 'ready') await run();
}

// ---------------------------------------------------------------------------------------------------------------
// Drawing

function redraw(): void {
  if (!image) return;
  showTiles(last?.tiles && last.tiles.rows * last.tiles.cols > 1 ? last.tiles : null);
  ui.globalBox.hidden = !last?.globalImage;
  if (last) {
    const who = selected.head === null ? `mean of layer ${selected.layer}'s heads` : `layer ${selected.layer} head ${selected.head}`;
    const what = `Attention of the last prompt position (which predicts the answer) over the image: ${who}.`;
    if (last.tiles) {
      // Tiled (Idefics3 / SmolVLM): each crop's tokens where the crop came from, the global tile in its own view,
      // both on one colour scale.
      const t = ui.showHeatmap.checked ? tiledHeatmaps(last.patterns, last.spans, last.tiles, selected.layer, selected.head) : null;
      drawImage(ui.view, last.modelInput, t?.values ?? null, last.grid, { scale: t?.scale });
      if (last.globalImage) {
        const side = last.tiles.tokenSide;
        drawImage(ui.globalView, last.globalImage, t?.global ?? null, [side, side], { box: GLOBAL_VIEW_BOX, scale: t?.scale });
        ui.globalCaption.textContent =
          `Global tile: the whole image at ${last.globalImage.width}x${last.globalImage.height} px, its own ${side}x${side} image tokens (the last of ${last.spans.length} runs)` +
          (t ? '; same colour scale as the crops.' : '.');
      }
      ui.caption.textContent = t
        ? `${what} ${last.tiles.global ? `${last.tiles.rows}x${last.tiles.cols} crops of ${last.tiles.tokenSide}x${last.tiles.tokenSide} tokens, each where it was cut from.` : ''}`.trim()
        : '';
    } else {
      const values = ui.showHeatmap.checked ? heatmapValues(last.patterns, last.span, selected.layer, selected.head) : null;
      drawImage(ui.view, last.modelInput, values, last.grid);
      ui.caption.textContent = values ? what : '';
    }
  } else {
    drawImage(ui.view, image, null);
    ui.caption.textContent = '';
  }
}

/** Dashed borders of a tiled image's crops over the main view (an overlay: the canvas pixels stay the heatmap's). */
function showTiles(tiles: { rows: number; cols: number } | null): void {
  ui.tileLines.hidden = !tiles;
  if (!tiles) return;
  ui.tileLines.style.gridTemplateRows = `repeat(${tiles.rows}, 1fr)`;
  ui.tileLines.style.gridTemplateColumns = `repeat(${tiles.cols}, 1fr)`;
  ui.tileLines.replaceChildren(...Array.from({ length: tiles.rows * tiles.cols }, () => document.createElement('div')));
}

function refreshGrid(): void {
  if (!engine?.model) return;
  const state: GridState = {
    layers: engine.layers,
    heads: engine.heads,
    scales,
    mass: last ? imageMass(last.patterns, last.spans) : null,
    mode: ui.gridMode.value === 'probe' ? 'probe' : 'mass',
    probe,
    selected,
  };
  renderGrid(ui.grid, state, {
    onHead(layer, head) {
      const key = headKey(layer, head);
      const s = nextScale(scales.get(key));
      if (s === 1) scales.delete(key);
      else scales.set(key, s);
      selected = { layer, head };
      fillSelects();
      rerunSoon();
      redraw();
    },
    onLayer(layer) {
      const keys = Array.from({ length: engine!.heads }, (_, h) => headKey(layer, h));
      const allAblated = keys.every((k) => scales.get(k) === 0);
      for (const k of keys) {
        if (allAblated) scales.delete(k);
        else scales.set(k, 0);
      }
      rerunSoon();
    },
  });
  renderLegend(ui.legend, probe, state.mode);
}

// ---------------------------------------------------------------------------------------------------------------
// Inputs

async function setImage(img: RgbImage): Promise<void> {
  image = img;
  last = null;
  ui.answer.textContent = '';
  ui.answer.dataset.tokens = '[]';
  ui.answerMeta.textContent = '';
  redraw();
  refreshGrid();
}

async function imageFromUrl(url: string): Promise<RgbImage> {
  const res = await fetch(url);
  if (!res.ok) throw new Error(`GET ${url}: HTTP ${res.status}`);
  return decodeImage(new Uint8Array(await res.arrayBuffer()), url);
}

function wire(): void {
  ui.restart.addEventListener('click', () => void restartEngine());
  ui.loadUrl.addEventListener('click', () => {
    const url = new URL(ui.modelUrl.value.trim() || DEFAULT_MODEL, location.href).href;
    void loadModel(cachedUrlFolder(url));
  });
  ui.modelFiles.addEventListener('change', () => {
    const files = Array.from(ui.modelFiles.files ?? []);
    if (files.length) void loadModel(fileListFolder(files));
  });
  ui.question.addEventListener('keydown', (e) => {
    if (e.key === 'Enter' && !e.shiftKey) {
      e.preventDefault();
      ui.askForm.requestSubmit();
    }
  });
  ui.askForm.addEventListener('submit', (e) => {
    e.preventDefault();
    void run();
  });
  const pick = async (file: File | undefined) => {
    if (!file) return;
    try {
      await setImage(await imageFromFile(file));
    } catch (e) {
      showAlert((e as Error).message);
    }
  };
  ui.imageFile.addEventListener('change', () => void pick(ui.imageFile.files?.[0]));
  ui.drop.addEventListener('dragover', (e) => {
    e.preventDefault();
    ui.drop.classList.add('over');
  });
  ui.drop.addEventListener('dragleave', () => ui.drop.classList.remove('over'));
  ui.drop.addEventListener('drop', (e) => {
    e.preventDefault();
    ui.drop.classList.remove('over');
    void pick(e.dataTransfer?.files[0]);
  });
  ui.randomScene.addEventListener('click', () => {
    const seed = Math.max(0, Math.floor(Number(ui.sceneSeed.value) || 0));
    const s = syntheticScene(seed, sceneSide(engine?.model));
    ui.sceneSeed.value = String(seed + 1);
    ui.question.value = s.question;
    void setImage(s.image).then(() => {
      if (document.body.dataset.state === 'ready') void run();
    });
  });
  ui.showHeatmap.addEventListener('change', redraw);
  ui.layerSelect.addEventListener('change', () => {
    selected = { layer: Number(ui.layerSelect.value), head: selected.head };
    redraw();
    refreshGrid();
  });
  ui.headSelect.addEventListener('change', () => {
    selected = { layer: selected.layer, head: ui.headSelect.value === 'mean' ? null : Number(ui.headSelect.value) };
    redraw();
    refreshGrid();
  });
  ui.gridMode.addEventListener('change', refreshGrid);
  ui.temperature.addEventListener('input', () => {
    ui.temperatureValue.textContent = Number(ui.temperature.value).toFixed(2);
    rerunSoon();
  });
  ui.resetHeads.addEventListener('click', () => {
    scales.clear();
    ui.temperature.value = '1';
    ui.temperatureValue.textContent = '1.00';
    rerunSoon();
  });
  ui.probeFile.addEventListener('change', async () => {
    const file = ui.probeFile.files?.[0];
    if (!file || !engine?.model) return;
    try {
      probe = parseProbeFile(await file.text(), file.name, engine.layers, engine.heads);
      ui.probeInfo.textContent = `${file.name}: ${probe.functions.length} functions, ${probe.byHead.size} functional heads`;
      ui.gridMode.value = 'probe';
      refreshGrid();
    } catch (e) {
      showAlert((e as Error).message);
    }
  });
}

// Test and console hooks.
declare global {
  interface Window {
    vlmscopeLab: { last: () => AskResult | null; scales: HeadScales; loseDevice: () => void };
  }
}
window.vlmscopeLab = {
  last: () => last,
  scales,
  loseDevice: () => engine?.gpu.device.destroy(),
};

async function main(): Promise<void> {
  wire();
  ui.modelUrl.value = DEFAULT_MODEL;
  try {
    const [img, question] = await Promise.all([imageFromUrl(DEFAULT_IMAGE), fetch(DEFAULT_QUESTION_URL).then((r) => (r.ok ? r.text() : ''))]);
    ui.question.value = params.get('question') ?? question.trim();
    await setImage(img);
  } catch {
    // No example image: the user brings one.
  }
  if (!(await startEngine())) return;
  await loadModel(cachedUrlFolder(DEFAULT_MODEL));
}

void main();
