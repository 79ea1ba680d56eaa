// `npm run web [-- --port 8080 --host 127.0.0.1]`: builds the browser bundles and serves the attention lab
// (web/) with the shipped weights and examples, at http://localhost:8080/web/.
//
// A small static server of our own, because weight loading needs what generic dev servers do not all give:
// HTTP Range requests (206 + Content-Range, exposed to scripts), HEAD, and ETag / Last-Modified so the page's
// Cache API copy of a model is refreshed when the files change. Only web/, weights/, examples/ and dist/ are
// served; anything else is 404.
import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import { createServer } from 'node:http';
import { extname, join, normalize, resolve, dirname, sep } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const SERVED = ['web', 'weights', 'examples', 'dist'];
const TYPES = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.map': 'application/json',
  '.css': 'text/css; charset=utf-8',
  '.json': 'application/json',
  '.txt': 'text/plain; charset=utf-8',
  '.md': 'text/markdown; charset=utf-8',
  '.png': 'image/png',
  '.jpg': 'image/jpeg',
  '.jpeg': 'image/jpeg',
  '.safetensors': 'application/octet-stream',
};

/** Starts the server; resolves with it and its base URL once listening (port 0 = any free port). */
export async function startServer({ port = 8080, host = '127.0.0.1', root = ROOT } = {}) {
  const server = createServer((req, res) => {
    handle(root, req, res).catch((e) => {
      if (!res.headersSent) res.writeHead(500, { 'Content-Type': 'text/plain' });
      res.end(String(e?.message ?? e));
    });
  });
  await new Promise((ok, fail) => {
    server.once('error', fail);
    server.listen(port, host, ok);
  });
  const addr = server.address();
  return { server, url: `http://${host === '0.0.0.0' ? 'localhost' : host}:${addr.port}` };
}

async function handle(root, req, res) {
  const url = new URL(req.url ?? '/', 'http://x');
  if (url.pathname === '/' || url.pathname === '/web') {
    res.writeHead(302, { Location: '/web/' });
    return res.end();
  }
  if (req.method !== 'GET' && req.method !== 'HEAD') {
    res.writeHead(405, { Allow: 'GET, HEAD' });
    return res.end();
  }
  let rel = normalize(decodeURIComponent(url.pathname)).replace(/^[/\\]+/, '');
  if (rel.endsWith(sep) || rel === 'web') rel = join(rel, 'index.html');
  const top = rel.split(sep)[0];
  const file = join(root, rel);
  if (!SERVED.includes(top) || !file.startsWith(join(root, top) + sep)) return notFound(res);
  let st;
  try {
    st = await stat(file);
  } catch {
    return notFound(res);
  }
  if (st.isDirectory()) return notFound(res);
  const etag = `"${st.size.toString(16)}-${Math.floor(st.mtimeMs).toString(16)}"`;
  const headers = {
    'Content-Type': TYPES[extname(file).toLowerCase()] ?? 'application/octet-stream',
    'Accept-Ranges': 'bytes',
    ETag: etag,
    'Last-Modified': st.mtime.toUTCString(),
    'Cache-Control': 'no-cache',
    'Access-Control-Allow-Origin': '*',
    'Access-Control-Expose-Headers': 'Content-Range, Content-Length, ETag, Last-Modified',
  };
  const range = req.headers.range;
  if (range) {
    const m = /^bytes=(\d*)-(\d*)$/.exec(range);
    let start = m && m[1] !== '' ? Number(m[1]) : NaN;
    let end = m && m[2] !== '' ? Number(m[2]) : st.size - 1;
    if (m && m[1] === '' && m[2] !== '') {
      start = Math.max(0, st.size - Number(m[2]));
      end = st.size - 1;
    }
    if (!m || !(start <= end) || start >= st.size) {
      res.writeHead(416, { ...headers, 'Content-Range': `bytes */${st.size}` });
      return res.end();
    }
    end = Math.min(end, st.size - 1);
    res.writeHead(206, { ...headers, 'Content-Range': `bytes ${start}-${end}/${st.size}`, 'Content-Length': end - start + 1 });
    if (req.method === 'HEAD') return res.end();
    return createReadStream(file, { start, end }).pipe(res);
  }
  if (req.headers['if-none-match'] === etag) {
    res.writeHead(304, headers);
    return res.end();
  }
  res.writeHead(200, { ...headers, 'Content-Length': st.size });
  if (req.method === 'HEAD') return res.end();
  createReadStream(file).pipe(res);
}

function notFound(res) {
  res.writeHead(404, { 'Content-Type': 'text/plain' });
  res.end('not found');
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const { values } = parseArgs({ options: { port: { type: 'string', default: '8080' }, host: { type: 'string', default: '127.0.0.1' } } });
  await import('./build.mjs');
  const { url } = await startServer({ port: Number(values.port), host: values.host });
  console.log(`attention lab: ${url}/web/  (Ctrl-C to stop)`);
}
