import { createServer, type Server } from 'node:http';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Checkpoint, CheckpointError, fileListFolder, nodeFolder, urlFolder } from '../src/io/checkpoint.js';
import { readTensorBytes } from '../src/io/safetensors.js';
import { encodeSafetensors, f16Bytes, f32Bytes, type TestTensor } from './helpers/safetensors-writer.js';
import { fixtureDir } from './helpers/fixtures.js';

const TINY_LLAVA = fixtureDir('tiny-llava');

let root: string;
beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'vlmscope-ckpt-'));
});
afterAll(async () => {
  await rm(root, { recursive: true, force: true });
});

let counter = 0;
/** Writes a folder of files (strings or bytes) and returns its path. */
async function folder(files: Record<string, string | Uint8Array | object>): Promise<string> {
  const dir = join(root, `f${counter++}`);
  await mkdir(dir);
  for (const [name, content] of Object.entries(files)) {
    const data = typeof content === 'string' || content instanceof Uint8Array ? content : JSON.stringify(content);
    await writeFile(join(dir, name), data);
  }
  return dir;
}

const CONFIG = { model_type: 'llava', hidden_size: 4 };
const vec = (vals: number[]): TestTensor => ({ dtype: 'F32', shape: [vals.length], data: f32Bytes(vals) });

// Two shards: a.* in shard 1, b.* in shard 2.
const SHARD1 = 'model-00001-of-00002.safetensors';
const SHARD2 = 'model-00002-of-00002.safetensors';
function shardedFiles() {
  return {
    'config.json': CONFIG,
    [SHARD1]: encodeSafetensors({ 'a.w': vec([1, 2, 3]), 'a.b': vec([4]) }),
    [SHARD2]: encodeSafetensors({ 'b.w': vec([5, 6]), 'b.big': vec(Array.from({ length: 300 }, (_, i) => i)) }),
    'model.safetensors.index.json': {
      metadata: { total_size: 1236 },
      weight_map: { 'a.w': SHARD1, 'a.b': SHARD1, 'b.w': SHARD2, 'b.big': SHARD2 } as Record<string, string>,
    },
  };
}

async function openError(dir: string): Promise<string> {
  const err = await Checkpoint.open(nodeFolder(dir)).catch((e: unknown) => e);
  expect(err).toBeInstanceOf(Error);
  return (err as Error).message;
}

const f32 = (b: Uint8Array) => [...new Float32Array(b.buffer, b.byteOffset, b.byteLength / 4)];

describe('single-file checkpoint', () => {
  it('loads config, tensors, side JSON', async () => {
    const dir = await folder({
      'config.json': CONFIG,
      'model.safetensors': encodeSafetensors({ 'x.weight': vec([1, 2]), 'y.weight': vec([3]) }),
      'preprocessor_config.json': { image_mean: [0.5] },
    });
    const ck = await Checkpoint.open(nodeFolder(dir));
    expect(ck.config).toEqual(CONFIG);
    expect(ck.files).toEqual(['model.safetensors']);
    expect([...ck.tensors.keys()]).toEqual(['x.weight', 'y.weight']);
    expect(ck.has('x.weight')).toBe(true);
    expect(ck.has('z')).toBe(false);
    expect(f32(await ck.read('y.weight'))).toEqual([3]);
    expect(await ck.readJson('preprocessor_config.json')).toEqual({ image_mean: [0.5] });
    expect(await ck.readJson('generation_config.json')).toBeNull();
    await ck.close();
    await expect(ck.read('x.weight')).rejects.toThrow(/closed/);
    await ck.close(); // idempotent
  });

  it('missing or invalid config.json', async () => {
    const noConfig = await folder({ 'model.safetensors': encodeSafetensors({ x: vec([1]) }) });
    const m1 = await openError(noConfig);
    expect(m1).toContain('config.json');
    expect(m1).toContain(noConfig);
    expect(m1).toContain('model.safetensors'); // lists what the folder has

    const badConfig = await folder({ 'config.json': '{"a": ', 'model.safetensors': encodeSafetensors({}) });
    expect(await openError(badConfig)).toMatch(/config\.json in .* is not valid JSON/);

    const missingDir = join(root, 'does-not-exist');
    const m3 = await openError(missingDir);
    expect(m3).toContain(missingDir);
    expect(m3).toMatch(/no such directory/);
  });

  it('no weights at all lists the folder contents', async () => {
    const dir = await folder({ 'config.json': CONFIG, 'pytorch_model.bin': 'x' });
    const m = await openError(dir);
    expect(m).toContain('no model.safetensors or model.safetensors.index.json');
    expect(m).toContain('pytorch_model.bin');
    expect(m).toContain('config.json');
  });

  it('header errors surface with the file path', async () => {
    const dir = await folder({ 'config.json': CONFIG, 'model.safetensors': new Uint8Array(4) });
    const m = await openError(dir);
    expect(m).toContain(join(dir, 'model.safetensors'));
  });

  it('unsupported dtypes can be skipped and are then named by info()', async () => {
    const dir = await folder({
      'config.json': CONFIG,
      'model.safetensors': encodeSafetensors({
        pos: { dtype: 'I64', shape: [1], data: new Uint8Array(8) },
        w: vec([1]),
      }),
    });
    expect(await openError(dir)).toMatch(/unsupported dtype I64 for tensor pos/);
    const ck = await Checkpoint.open(nodeFolder(dir), { allowUnsupported: true });
    expect(ck.has('pos')).toBe(false);
    expect(() => ck.info('pos')).toThrow(/tensor pos in .* has unsupported dtype I64/);
    await ck.close();
  });
});

describe('sharded checkpoint', () => {
  it('loads the union and reads each tensor from its shard', async () => {
    const dir = await folder(shardedFiles());
    const ck = await Checkpoint.open(nodeFolder(dir));
    expect(ck.files).toEqual([SHARD1, SHARD2]);
    expect(ck.tensors.size).toBe(4);
    expect(ck.info('a.w').file).toBe(join(dir, SHARD1));
    expect(ck.info('b.w').file).toBe(join(dir, SHARD2));
    expect(f32(await ck.read('a.w'))).toEqual([1, 2, 3]);
    expect(f32(await ck.read('a.b'))).toEqual([4]);
    expect(f32(await ck.read('b.w'))).toEqual([5, 6]);

    // readChunks concatenates to read().
    const whole = await ck.read('b.big');
    const parts: Uint8Array[] = [];
    for await (const { offset, bytes } of ck.readChunks('b.big', 100)) {
      expect(offset).toBe(parts.reduce((s, p) => s + p.byteLength, 0));
      parts.push(bytes.slice()); // chunks share one scratch buffer
    }
    expect(parts.length).toBe(12);
    expect(Buffer.concat(parts)).toEqual(Buffer.from(whole));
    await ck.close();
  });

  it('missing shard file', async () => {
    const files: Record<string, unknown> = shardedFiles();
    delete files[SHARD2];
    const dir = await folder(files as Record<string, object>);
    const m = await openError(dir);
    expect(m).toContain(SHARD2);
    expect(m).toContain(dir);
    expect(m).toMatch(/missing/);
  });

  it('index naming a tensor that is absent from its shard', async () => {
    const files = shardedFiles();
    files['model.safetensors.index.json'].weight_map['ghost.weight'] = SHARD1;
    const m = await openError(await folder(files));
    expect(m).toContain('ghost.weight');
    expect(m).toContain(SHARD1);
  });

  it('index pointing at the wrong shard', async () => {
    const files = shardedFiles();
    files['model.safetensors.index.json'].weight_map['a.w'] = SHARD2;
    const m = await openError(await folder(files));
    expect(m).toContain(`maps tensor a.w to ${SHARD2}, but ${SHARD2} has no tensor a.w (it is in ${SHARD1})`);
  });

  it('tensor stored in two shards', async () => {
    const files = shardedFiles();
    files[SHARD2] = encodeSafetensors({ 'b.w': vec([5, 6]), 'b.big': vec([0]), 'a.w': vec([9]) });
    const m = await openError(await folder(files));
    expect(m).toContain(`tensor a.w appears in two shards`);
    expect(m).toContain(SHARD1);
    expect(m).toContain(SHARD2);
  });

  it('invalid index', async () => {
    const base = shardedFiles();
    const bad = await folder({ ...base, 'model.safetensors.index.json': '{nope' });
    expect(await openError(bad)).toMatch(/model\.safetensors\.index\.json in .* is not valid JSON/);
    const noMap = await folder({ ...base, 'model.safetensors.index.json': { metadata: {} } });
    expect(await openError(noMap)).toMatch(/no weight_map object/);
    const escape = await folder({ ...base, 'model.safetensors.index.json': { weight_map: { x: '../x.safetensors' } } });
    expect(await openError(escape)).toMatch(/leaves the folder/);
  });

  it('require() lists every missing name; info() names the folder and files', async () => {
    const dir = await folder(shardedFiles());
    const ck = await Checkpoint.open(nodeFolder(dir));
    expect(() => ck.require(['a.w', 'b.w'])).not.toThrow();
    expect(() => ck.require(['a.w', 'q.proj', 'k.proj'])).toThrow(
      `2 missing tensors in ${dir} (looked in ${SHARD1}, ${SHARD2}): q.proj, k.proj`,
    );
    const many = Array.from({ length: 13 }, (_, i) => `layer.${i}.w`);
    let msg = '';
    try {
      ck.require(many);
    } catch (e) {
      expect(e).toBeInstanceOf(CheckpointError);
      msg = (e as Error).message;
    }
    expect(msg).toContain('layer.0.w');
    expect(msg).toContain('layer.9.w');
    expect(msg).not.toContain('layer.10.w');
    expect(msg).toContain('and 3 more');
    expect(() => ck.info('nope')).toThrow(`missing tensor nope in ${dir} (looked in ${SHARD1}, ${SHARD2})`);
    await ck.close();
  });
});

describe('other folder sources', () => {
  it('fileListFolder matches picked files by basename', async () => {
    const files = shardedFiles();
    const picked = Object.entries(files).map(([name, c]) => {
      const data = c instanceof Uint8Array ? c : JSON.stringify(c);
      return new File([data], name);
    });
    const ck = await Checkpoint.open(fileListFolder(picked));
    expect(f32(await ck.read('b.w'))).toEqual([5, 6]);
    expect(ck.info('a.w').file).toBe(SHARD1);
    await ck.close();
    // A missing shard is reported the same way.
    const err = await Checkpoint.open(fileListFolder(picked.filter((f) => f.name !== SHARD1))).catch((e) => e);
    expect((err as Error).message).toContain(`shard ${SHARD1} listed in model.safetensors.index.json is missing`);
  });

  it('urlFolder reads with HTTP Range requests', async () => {
    const dir = await folder(shardedFiles());
    const requests: string[] = [];
    const server: Server = createServer(async (req, res) => {
      const range = req.headers.range;
      requests.push(`${req.url} ${range ?? ''}`);
      let body: Buffer;
      try {
        body = await readFile(join(dir, decodeURIComponent(req.url!.replace(/^\/m\//, ''))));
      } catch {
        res.writeHead(404).end();
        return;
      }
      const m = range ? /^bytes=(\d+)-(\d+)$/.exec(range) : null;
      if (!m) return void res.writeHead(200, { 'Content-Length': body.length }).end(body);
      const [s, e] = [Number(m[1]), Math.min(Number(m[2]), body.length - 1)];
      res
        .writeHead(206, { 'Content-Range': `bytes ${s}-${e}/${body.length}`, 'Content-Length': e - s + 1 })
        .end(body.subarray(s, e + 1));
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    try {
      const { port } = server.address() as { port: number };
      const ck = await Checkpoint.open(urlFolder(`http://127.0.0.1:${port}/m/`));
      expect(ck.config).toEqual(CONFIG);
      requests.length = 0;
      const bytes = await ck.read('b.big');
      expect(bytes.byteLength).toBe(1200);
      const info = ck.info('b.big');
      // Exactly one range request, for exactly the tensor's bytes.
      expect(requests).toEqual([`/m/${SHARD2} bytes=${info.begin}-${info.end - 1}`]);
      expect(await ck.readJson('preprocessor_config.json')).toBeNull();
      await ck.close();
    } finally {
      await new Promise((r) => server.close(r));
    }
  });
});

describe('tiny-llava fixture', () => {
  it('has the fp16 embedding table', async () => {
    const ck = await Checkpoint.open(nodeFolder(TINY_LLAVA));
    try {
      const info = ck.info('language_model.model.embed_tokens.weight');
      expect(info.shape).toEqual([256, 64]);
      expect(info.dtype).toBe('F16');
      const src = await nodeFolder(TINY_LLAVA).open('model.safetensors');
      try {
        const bytes = await readTensorBytes(src, info);
        expect(bytes.byteLength).toBe(32768);
        expect(Buffer.from(await ck.read(info.name))).toEqual(Buffer.from(bytes));
      } finally {
        await src.close();
      }
      expect(ck.config.model_type).toBe('llava');
      expect(await ck.readJson('preprocessor_config.json')).not.toBeNull();
      for (const info of ck.tensors.values()) expect(['F16', 'F32', 'BF16']).toContain(info.dtype);
    } finally {
      await ck.close();
    }
  });
});
