// Multi-head attention with per-head interventions as kernel inputs.
//   z[i, h] = head_scale[h] * softmax_k( s_ik ) · V[k, kvh]      s_ik = (q_i · k_k) * scale, then
//   s_ik *= head_alpha[h] when key k is an image token and query row i lies in [temp_begin, temp_end)
//   (ScalingVis / AdaptVis image-attention temperature), keys past the causal limit skipped (mask).
// With HEAD_VECTORS (a spec with mean_ablate / steer entries for this tower) each head also has two vectors:
//   z[i, h] = head_scale[h] * (replace[h] ? mean[h] : softmax · V) + (row i in steer scope of h ? add[h] : 0)
//   (mean ablation, then gain, then the ITI steering vector alpha * sigma * direction).
// With PATCH (activation patching; only with HEAD_VECTORS, read through the same binding) the bound range also holds
// a row map [q_rows, heads] (f32: 0 = not patched, k + 1 = vector k) at patch_map and vectors [.., head_dim] at
// patch_vecs: a patched (row, head) takes its vector in place of softmax · V (and of the mean), before gain and steer.
// One workgroup per (query row, head); keys stream through in chunks of WG with an online softmax, so the
// sequence length is unbounded by workgroup memory. An un-intervened run reads head_scale = 1 and
// alpha = 1: the same work as a plain kernel. With CAPTURE the normalised probabilities are written too.
// With KEY_RANGES row i sees only keys [begin_i, end_i) (u32 pairs, intersected with the causal limit): the
// Qwen2-VL / 2.5-VL vision towers' per-image blocks and windows, and attention knockout, in this one kernel. The
// softmax streams from begin, so a window costs what the window costs; an empty range gives softmax · V = 0.
// q, k and v are strided views (offset + row stride), so all three can read one fused [rows, 3E] qkv output.
// KV4 (main and split KV; the launcher sets it when head_dim, the kv stride and both offsets are multiples of 4): k and
// v are bound as vec4 arrays, q · k runs over vec4s and each thread owns four consecutive dims (one vec4 of V per key).
// With VARIANTS the rows of the call are independent alternatives of one position (activation patching's per-head
// variants of the last prompt row): row i sees the shared prefix keys [0, self_prefix) and its own key pos0 + i, and
// no other row's. The keys stream in the order 0..self_prefix-1 then its own, exactly as a lone row at position
// self_prefix streams keys 0..self_prefix, so each row computes what a separate one-row run would.
// Split KV (flash decoding; entry points split_partial and split_merge, define SPLIT): with one query row a call has
// only `heads` workgroups, far too few for a GPU, and each streams every key. split_partial runs a workgroup per
// (row, head, split) over the split's slice [begin + s * split_keys, ..) of the row's stream (the same per-key rules
// and online softmax as main) and writes the slice's running max, sum and unnormalised softmax · V; split_merge, one
// workgroup per (row, head), rescales the slices to their common max as the online softmax does between chunks and
// applies what main applies after softmax · V (head scale, mean replacement, patch, steer). No pattern capture: the
// launcher runs main for those (see kernels/attention.ts).
// Tiled prefill (entry point tiled, define TILED; at the end of this file): a workgroup per block of query rows and
// head, sharing K / V tiles in workgroup memory among the block's rows, with main's per-key and per-head rules.

struct Params {
  q_rows: u32,     // query rows in this call
  heads: u32,
  kv_heads: u32,   // GQA: query head h reads kv head h / (heads / kv_heads)
  head_dim: u32,
  q_off: u32,      // element offset of query row 0
  q_stride: u32,   // elements between query rows
  kv_stride: u32,  // elements between key (and value) rows
  z_stride: u32,   // elements between output rows
  pos0: u32,       // absolute position of query row 0 (causal limit = pos0 + i + 1 keys)
  n_keys: u32,     // keys available
  causal: u32,
  scale: f32,      // head_dim^-0.5
  temp_begin: u32, // query rows [temp_begin, temp_end) get the image temperature
  temp_end: u32,
  pat_keys: u32,   // pattern row length (>= n_keys) when capturing
  // Query rows [begin, end) of this call in each steering scope: 1 = "all", 2 = "last", 3 = "generated".
  steer1_begin: u32,
  steer1_end: u32,
  steer2_begin: u32,
  steer2_end: u32,
  steer3_begin: u32,
  steer3_end: u32,
  k_off: u32,      // element offset of key row 0 (fused qkv: E)
  v_off: u32,      // element offset of value row 0 (fused qkv: 2E)
  kr_row: u32,     // KEY_RANGES: index of the pair for query row 0
  pat_rel: u32,    // 1: pattern entry j of row i holds key begin_i + j (a block-diagonal sequence captured compactly)
  ko_words: u32,   // KNOCKOUT: u32 words per query row of the knocked-out-edge bitset
  patch_map: u32,  // PATCH: element offset of the row map [q_rows, heads] in head_vectors
  patch_vecs: u32, // PATCH: element offset of the patch vectors [.., head_dim] in head_vectors
  self_prefix: u32, // VARIANTS: keys every row shares; row i's own key is pos0 + i
  splits: u32,     // SPLIT: slices per (row, head)
  split_keys: u32, // SPLIT: stream indices per slice
  img_begin: u32,  // IMAGE_SPAN: the image keys are exactly [img_begin, img_end)
  img_end: u32,
}

struct HeadParams {
  scale: f32,      // multiplies z_h: 0 ablates, 1 is a plain run, g > 1 is gain
  alpha: f32,      // image-key temperature of this head in this layer (1 = off)
  replace: u32,    // bit 0: z_h is replaced by the head's mean vector (mean_ablate; read only with HEAD_VECTORS);
                   // bit 1: the head loses the knocked-out edges (attention knockout; read only with KNOCKOUT)
  steer: u32,      // 0: not steered, else the scope (1..3) whose rows get the head's add vector
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> q: array<f32>;              // [q_rows, heads, head_dim] (rotated)
#if KV4
@group(0) @binding(2) var<storage, read> k: array<vec4<f32>>;        // [n_keys, kv_heads, head_dim / 4] (rotated)
@group(0) @binding(3) var<storage, read> v: array<vec4<f32>>;        // [n_keys, kv_heads, head_dim / 4]
#else
@group(0) @binding(2) var<storage, read> k: array<f32>;              // [n_keys, kv_heads, head_dim] (rotated)
@group(0) @binding(3) var<storage, read> v: array<f32>;              // [n_keys, kv_heads, head_dim]
#endif
@group(0) @binding(4) var<storage, read> head_params: array<HeadParams>; // [heads]
@group(0) @binding(5) var<storage, read> key_is_image: array<u32>;   // [n_keys] 1 = image token key
@group(0) @binding(6) var<storage, read_write> z: array<f32>;        // [q_rows, heads, head_dim]
#if CAPTURE
@group(0) @binding(7) var<storage, read_write> pattern: array<f32>;  // [heads, q_rows, pat_keys]
#endif
#if HEAD_VECTORS
@group(0) @binding(8) var<storage, read> head_vectors: array<f32>;   // [heads, 2, head_dim]: mean, add (PATCH: + map, vectors)
#endif
#if KEY_RANGES
@group(0) @binding(9) var<storage, read> key_ranges: array<u32>;     // [kr_row + q_rows, 2]: begin, end
#endif
#if KNOCKOUT
@group(0) @binding(10) var<storage, read> knockout: array<u32>;      // [q_rows, ko_words]: bit k = edge to key k blocked

fn knocked(i: u32, key: u32) -> bool {
  return ((knockout[i * p.ko_words + key / 32u] >> (key % 32u)) & 1u) != 0u;
}
#endif

#if SPLIT
// [q_rows * heads, splits, 2 + head_dim]: the slice's running max m, sum l, then acc (softmax · V unnormalised, at m).
@group(0) @binding(11) var<storage, read_write> partials: array<f32>;
#endif

override WG: u32 = 64u;
const MAX_DIMS_PER_THREAD: u32 = 4u; // head_dim <= 4 * WG (256 with WG = 64); the launcher checks
const NEG_BIG: f32 = -3.0e38;

#if KV4
var<workgroup> q_row: array<vec4<f32>, 64>;
#else
var<workgroup> q_row: array<f32, 256>;
#endif
var<workgroup> scores: array<f32, WG>;

// Query row i of head h into q_row (every thread of the workgroup calls it: it ends with a barrier).
fn load_q(t: u32, i: u32, h: u32) {
  let q_base = p.q_off + i * p.q_stride + h * p.head_dim;
#if KV4
  for (var d4 = t; d4 < p.head_dim / 4u; d4 += WG) {
    let b = q_base + 4u * d4;
    q_row[d4] = vec4<f32>(q[b], q[b + 1u], q[b + 2u], q[b + 3u]);
  }
#else
  for (var d = t; d < p.head_dim; d += WG) {
    q_row[d] = q[q_base + d];
  }
#endif
  workgroupBarrier();
}

// Whether a key is an image token: a range test under IMAGE_SPAN (the caller knows the image keys form one run, e.g.
// one image's tokens), which spares a load per key; else its flag.
fn is_image_key(key: u32) -> bool {
#if IMAGE_SPAN
  return key >= p.img_begin && key < p.img_end;
#else
  return key_is_image[key] != 0u;
#endif
}

// q · k of a key scaled, then the image-key temperature: what main and tiled both do to a dot product.
fn tempered(dot: f32, key: u32, alpha: f32) -> f32 {
  var s = dot * p.scale;
  // Rows and heads without a temperature (alpha 1: uniform per row and head) read no key flag.
  if (alpha != 1.0 && is_image_key(key)) {
    s *= alpha;
  }
  return s;
}

fn score(qi: u32, key: u32, kv_base: u32, alpha: f32) -> f32 {
  let kb = p.k_off + key * p.kv_stride + kv_base;
  var s = 0.0;
#if KV4
  let kb4 = kb / 4u;
  let n4 = p.head_dim / 4u;
  for (var d4 = 0u; d4 < n4; d4++) {
    s += dot(q_row[d4], k[kb4 + d4]);
  }
#else
  let n = p.head_dim;
  for (var d = 0u; d < n; d++) {
    s = fma(q_row[d], k[kb + d], s);
  }
#endif
  return tempered(s, key, alpha);
}

// The key a row reads at stream index j: j itself, except under VARIANTS where index self_prefix is the row's own key.
fn key_of(j: u32, i: u32) -> u32 {
#if VARIANTS
  if (j >= p.self_prefix) {
    return p.pos0 + i;
  }
#endif
  return j;
}

#if HEAD_VECTORS
fn in_steer_rows(code: u32, i: u32) -> bool {
  switch code {
    case 1u: { return i >= p.steer1_begin && i < p.steer1_end; }
    case 2u: { return i >= p.steer2_begin && i < p.steer2_end; }
    case 3u: { return i >= p.steer3_begin && i < p.steer3_end; }
    default: { return false; }
  }
}
#endif

// The stream indices [begin, end) query row i reads, and its image-key temperature under head params hp.
struct RowKeys {
  begin: u32,
  end: u32,
  alpha: f32,
}

fn row_keys(i: u32, hp: HeadParams) -> RowKeys {
  var alpha = 1.0;
  if (i >= p.temp_begin && i < p.temp_end) {
    alpha = hp.alpha;
  }
  // Keys [kbegin, kend): all available ones (causal: up to the query's position), narrowed by KEY_RANGES.
  var kend = p.n_keys;
  if (p.causal != 0u) {
    kend = min(kend, p.pos0 + i + 1u);
  }
  var kbegin = 0u;
#if KEY_RANGES
  let kr = 2u * (p.kr_row + i);
  kbegin = key_ranges[kr];
  kend = min(kend, key_ranges[kr + 1u]);
#endif
#if VARIANTS
  kend = p.self_prefix + 1u; // stream indices: the shared keys, then the row's own
#endif
  return RowKeys(kbegin, kend, alpha);
}

// PATCH: the vector index + 1 that replaces z of (row i, head h); 0 = not patched.
fn patch_index(i: u32, h: u32) -> u32 {
#if PATCH
  return u32(head_vectors[p.patch_map + i * p.heads + h]);
#else
  return 0u;
#endif
}

// z of a head scaled by 0, mean-ablated or patched does not depend on softmax · V: such a (row, head) need stream no
// keys (uniform per workgroup).
fn discarded(hp: HeadParams, patch_k: u32) -> bool {
  var d = hp.scale == 0.0;
#if HEAD_VECTORS
  d = d || (hp.replace & 1u) != 0u || patch_k != 0u;
#endif
  return d;
}

#if CAPTURE
// A key's raw score into its pattern row (entry key - pat_off, when the row holds it); probabilities() turns the row
// into probabilities once the row's m and l are final.
fn store_score(pat_base: u32, pat_off: u32, key: u32, s: f32) {
  if (key - pat_off < p.pat_keys) {
    pattern[pat_base + key - pat_off] = s;
  }
}
#endif

// An online softmax's state: running max m, running sum l of exp(s - m), and this thread's dims (own_dim) of the
// unnormalised softmax · V at m.
struct Running {
  m: f32,
  l: f32,
  acc: array<f32, MAX_DIMS_PER_THREAD>,
}

// Streams stream indices [keys.begin, keys.end) of row i (kv head at kv_base) through the online softmax in chunks of
// WG; every thread of the workgroup calls it (barriers). With CAPTURE the scores are stored in the pattern row at
// pat_base (entry j = key j + pat_off) as they stream.
fn stream(t: u32, i: u32, kv_base: u32, keys: RowKeys, hp: HeadParams, pat_base: u32, pat_off: u32) -> Running {
  let kbegin = keys.begin;
  let kend = keys.end;
#if KNOCKOUT
  let knock_head = (hp.replace & 2u) != 0u;
#endif
  var m = NEG_BIG;
  var l = 0.0;
#if KV4
  var acc4 = vec4<f32>();
  let own4 = t < p.head_dim / 4u;
  // This thread's vec4 of key row 0's V slice and the vec4s between key rows, computed once (SwiftShader's JIT does
  // not hoist loop invariants).
  let v_own4 = (p.v_off + kv_base) / 4u + t;
  let v_stride4 = p.kv_stride / 4u;
#else
  var acc: array<f32, MAX_DIMS_PER_THREAD>;
#endif
  for (var kc = kbegin; kc < kend; kc += WG) {
    let key = kc + t;
    var s = NEG_BIG;
    if (key < kend) {
#if KNOCKOUT
      // A blocked edge is masked like a key past the causal limit, and its q · k is not computed.
      if (knock_head && knocked(i, key)) {
        s = NEG_BIG;
      } else {
        s = score(i, key_of(key, i), kv_base, keys.alpha);
      }
#else
      s = score(i, key_of(key, i), kv_base, keys.alpha);
#endif
#if CAPTURE
      store_score(pat_base, pat_off, key, s);
#endif
    }
    scores[t] = s;
    workgroupBarrier();
    let n_here = min(WG, kend - kc);
    var cm = NEG_BIG;
    for (var j = 0u; j < n_here; j++) {
      cm = max(cm, scores[j]);
    }
    let m_new = max(m, cm);
    let correction = exp(m - m_new);
    l *= correction;
#if KV4
    acc4 *= correction;
#else
    for (var c = 0u; c < MAX_DIMS_PER_THREAD; c++) {
      acc[c] *= correction;
    }
#endif
    // Each thread exponentiates its own key once (not every thread every key: on CPU drivers that redundant
    // exp dominated the kernel), then all read the probabilities.
    workgroupBarrier();
    scores[t] = exp(s - m_new);
#if KNOCKOUT
    // A blocked key weighs 0 even while every key so far is blocked (m_new still NEG_BIG).
    if (s <= NEG_BIG) {
      scores[t] = 0.0;
    }
#endif
    workgroupBarrier();
    for (var j = 0u; j < n_here; j++) {
      let pj = scores[j];
      l += pj;
#if KV4
      if (own4) {
        acc4 = fma(vec4<f32>(pj), v[v_own4 + key_of(kc + j, i) * v_stride4], acc4);
      }
#else
      let vb = p.v_off + key_of(kc + j, i) * p.kv_stride + kv_base;
      for (var c = 0u; c < MAX_DIMS_PER_THREAD; c++) {
        let d = t + c * WG;
        if (d < p.head_dim) {
          acc[c] = fma(pj, v[vb + d], acc[c]);
        }
      }
#endif
    }
    m = m_new;
    workgroupBarrier();
  }
#if KV4
  return Running(m, l, array<f32, MAX_DIMS_PER_THREAD>(acc4.x, acc4.y, acc4.z, acc4.w));
#else
  return Running(m, l, acc);
#endif
}

// The head dim that component c of a thread's acc holds: lane + c * lanes (a thread's dims strided: each load of a
// key row by the workgroup is consecutive), or under KV4 4 lane + c (each thread loads its dims as one vec4).
fn own_dim(lane: u32, lanes: u32, c: u32) -> u32 {
#if KV4
  return 4u * lane + c;
#else
  return lane + c * lanes;
#endif
}

// What follows softmax · V for (row i, head h), written to z: normalise by l, head scale, and with HEAD_VECTORS the
// patch or mean replacement and the steering vector. The calling thread owns dims lane + c * lanes (main and the split
// merge: lane t of WG; tiled: lane t % TILE_LANES of its row's TILE_LANES).
fn finish(lane: u32, lanes: u32, i: u32, h: u32, hp: HeadParams, patch_k: u32, l: f32, acc: array<f32, MAX_DIMS_PER_THREAD>) {
  // l >= 1 whenever a key was seen; no keys (an empty range) gives acc = 0 and z = 0, not 0 / 0.
  let out_scale = select(0.0, hp.scale / l, l > 0.0);
  let z_base = i * p.z_stride + h * p.head_dim;
#if HEAD_VECTORS
  // Uniform per workgroup: heads without mean_ablate / steer read no vector.
  let replaced = (hp.replace & 1u) != 0u;
  let patched = patch_k != 0u;
  let vec_base = h * 2u * p.head_dim;
  let steered = in_steer_rows(hp.steer, i);
  var patch_base = 0u;
#if PATCH
  if (patched) {
    patch_base = p.patch_vecs + (patch_k - 1u) * p.head_dim;
  }
#endif
#endif
  for (var c = 0u; c < MAX_DIMS_PER_THREAD; c++) {
    let d = own_dim(lane, lanes, c);
    if (d < p.head_dim) {
      var zv = acc[c] * out_scale;
#if HEAD_VECTORS
      if (patched) {
        zv = hp.scale * head_vectors[patch_base + d];
      } else if (replaced) {
        zv = hp.scale * head_vectors[vec_base + d];
      }
      if (steered) {
        zv += head_vectors[vec_base + p.head_dim + d];
      }
#endif
      z[z_base + d] = zv;
    }
  }
}

#if CAPTURE
// Probabilities after the temperature and the mask, i.e. what multiplied V (before head_scale); 0 outside
// [kbegin, kend). The calling thread turns the scores it stored (keys kbegin + t + n * stride) into probabilities, so
// no barrier is needed; a blocked key stored NEG_BIG and weighs 0. main: thread t of WG; solo: the one thread.
fn probabilities(t: u32, stride: u32, keys: RowKeys, m: f32, l: f32, pat_base: u32, pat_off: u32) {
  for (var key = keys.begin + t; key < keys.end; key += stride) {
    let j = key - pat_off;
    if (j < p.pat_keys) {
      let s = pattern[pat_base + j];
      var prob = 0.0;
      if (l > 0.0 && s > NEG_BIG) {
        prob = exp(s - m) / l;
      }
      pattern[pat_base + j] = prob;
    }
  }
  for (var j = t; j < p.pat_keys; j += stride) {
    let key = j + pat_off;
    if (key < keys.begin || key >= keys.end) {
      pattern[pat_base + j] = 0.0;
    }
  }
}
#endif

// What main and solo know of their (row, head) item before streaming: the row, the head, its kv head's first column
// (GQA), head params, the keys it streams (none for a head whose z does not depend on them, unless CAPTURE: then every
// head streams, for the pattern), its patch index (one map entry per item) and its pattern row.
struct RowHead {
  i: u32,
  h: u32,
  kv_base: u32,
  hp: HeadParams,
  keys: RowKeys,
  patch_k: u32,
  pat_base: u32,
  pat_off: u32,
}

fn row_head(item: u32) -> RowHead {
  let i = item / p.heads;
  let h = item % p.heads;
  let hp = head_params[h];
  var keys = row_keys(i, hp);
  let patch_k = patch_index(i, h);
#if !CAPTURE
  if (discarded(hp, patch_k)) {
    keys.end = keys.begin;
  }
#endif
  var pat_base = 0u;
  var pat_off = 0u;
#if CAPTURE
  // Pattern row of (h, i); entry j holds key j + pat_off. The scores are stored there as they stream and turned
  // into probabilities once m and l are final (no second pass over q · k).
  pat_base = (h * p.q_rows + i) * p.pat_keys;
  if (p.pat_rel != 0u) {
    pat_off = keys.begin;
  }
#endif
  return RowHead(i, h, (h / (p.heads / p.kv_heads)) * p.head_dim, hp, keys, patch_k, pat_base, pat_off);
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) t: u32) {
  let item = wg.y * nwg.x + wg.x;
  if (item >= p.q_rows * p.heads) {
    return; // uniform per workgroup: safe before barriers
  }
  let it = row_head(item);
  load_q(t, it.i, it.h);
  let run = stream(t, it.i, it.kv_base, it.keys, it.hp, it.pat_base, it.pat_off);
  finish(t, WG, it.i, it.h, it.hp, it.patch_k, run.l, run.acc);
#if CAPTURE
  probabilities(t, WG, it.keys, run.m, run.l, it.pat_base, it.pat_off);
#endif
}

#if SOLO
// The single pass for CPU adapters (the launcher compiles it with KV4 only): one invocation per (query row, head),
// holding the row's q and softmax · V in registers, so no workgroup memory and no barrier. SwiftShader runs the
// invocations of a workgroup as SIMD lanes and each barrier as a switch of every lane group; main's three barriers and
// the scores' round trips through workgroup memory per chunk of WG keys cost more there than sharing a row's work
// across threads saves. The keys stream in main's chunks of WG with main's order of operations (each dot product over
// vec4s in order, one rescale per chunk, then the chunk's probabilities in order), so z and the pattern are those of
// main bit for bit.
@compute @workgroup_size(WG)
fn solo(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) t: u32) {
  let item = (wg.y * nwg.x + wg.x) * WG + t;
  if (item >= p.q_rows * p.heads) {
    return; // no barrier follows
  }
  let it = row_head(item);
  let i = it.i;
  let h = it.h;
  let hp = it.hp;
  let keys = it.keys;
  let pat_base = it.pat_base;
  let pat_off = it.pat_off;
#if KNOCKOUT
  // Whether the row has a blocked edge among its keys, from its bitset's words (a thread of its own can read them
  // without a barrier): rows with none, most rows of a knockout, skip the per-key test.
  var knock_row = false;
  if ((hp.replace & 2u) != 0u && keys.begin < keys.end) {
    for (var w = keys.begin / 32u; w * 32u < keys.end; w++) {
      knock_row = knock_row | (knockout[i * p.ko_words + w] != 0u);
    }
  }
#endif
  let n4 = p.head_dim / 4u;
  let q_base = p.q_off + i * p.q_stride + h * p.head_dim;
  var qv: array<vec4<f32>, 64>;
  var acc: array<vec4<f32>, 64>;
  for (var d4 = 0u; d4 < n4; d4++) {
    let b = q_base + 4u * d4;
    qv[d4] = vec4<f32>(q[b], q[b + 1u], q[b + 2u], q[b + 3u]);
    acc[d4] = vec4<f32>();
  }
  // Key row 0 of this kv head in vec4s, and the vec4s between key rows (computed once: SwiftShader does not hoist).
  let k_base4 = (p.k_off + it.kv_base) / 4u;
  let v_base4 = (p.v_off + it.kv_base) / 4u;
  let stride4 = p.kv_stride / 4u;
  var m = NEG_BIG;
  var l = 0.0;
  var chunk: array<f32, 64>;
  for (var kc = keys.begin; kc < keys.end; kc += WG) {
    let n_here = min(WG, keys.end - kc);
    var cm = NEG_BIG;
    for (var j = 0u; j < n_here; j++) {
      let key = kc + j;
      let kk = key_of(key, i);
      let kb4 = k_base4 + kk * stride4;
      var dot_qk = 0.0;
      for (var d4 = 0u; d4 < n4; d4++) {
        dot_qk += dot(qv[d4], k[kb4 + d4]);
      }
      var s = tempered(dot_qk, kk, keys.alpha);
#if KNOCKOUT
      if (knock_row && knocked(i, key)) {
        s = NEG_BIG;
      }
#endif
#if CAPTURE
      store_score(pat_base, pat_off, key, s);
#endif
      chunk[j] = s;
      cm = max(cm, s);
    }
    let m_new = max(m, cm);
    let correction = exp(m - m_new);
    l *= correction;
    for (var d4 = 0u; d4 < n4; d4++) {
      acc[d4] *= correction;
    }
    for (var j = 0u; j < n_here; j++) {
      var pj = exp(chunk[j] - m_new);
#if KNOCKOUT
      if (chunk[j] <= NEG_BIG) {
        pj = 0.0;
      }
#endif
      l += pj;
      let vb4 = v_base4 + key_of(kc + j, i) * stride4;
      for (var d4 = 0u; d4 < n4; d4++) {
        acc[d4] = fma(vec4<f32>(pj), v[vb4 + d4], acc[d4]);
      }
    }
    m = m_new;
  }
  // finish writes a thread's four dims (own_dim under KV4: 4 lane + c): called once per vec4 of the row.
  for (var d4 = 0u; d4 < n4; d4++) {
    let a = acc[d4];
    finish(d4, n4, i, h, hp, it.patch_k, l, array<f32, MAX_DIMS_PER_THREAD>(a.x, a.y, a.z, a.w));
  }
#if CAPTURE
  probabilities(0u, 1u, keys, m, l, pat_base, pat_off);
#endif
}
#endif

#if SPLIT
// Phase 1 of split KV: workgroup (row i, head h, slice s) streams stream indices [begin + s * split_keys, ..) of the
// row's [begin, end) and stores its Running state. The launcher compiles it without PATCH (the head vectors are not
// bound here, keeping the storage bindings of this phase within the adapter's limit), so a patched head streams its
// keys and split_merge drops them; scaled-0 and mean-ablated heads stream none, as in main.
@compute @workgroup_size(WG)
fn split_partial(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_index) t: u32) {
  let item = wg.y * nwg.x + wg.x;
  if (item >= p.q_rows * p.heads * p.splits) {
    return; // uniform per workgroup: safe before barriers
  }
  let s = item % p.splits;
  let ih = item / p.splits;
  let i = ih / p.heads;
  let h = ih % p.heads;
  let kv_base = (h / (p.heads / p.kv_heads)) * p.head_dim;
  load_q(t, i, h);
  let hp = head_params[h];
  var keys = row_keys(i, hp);
  if (discarded(hp, 0u)) {
    keys.end = keys.begin;
  }
  // The slice, clamped into [begin, end): slices past a short row's end (and every slice of an empty or inverted
  // range) are empty and store m = NEG_BIG, l = 0, acc = 0, which the merge weighs 0.
  let begin = min(keys.end, keys.begin + s * p.split_keys);
  let end = min(keys.end, begin + p.split_keys);
  let run = stream(t, i, kv_base, RowKeys(begin, end, keys.alpha), hp, 0u, 0u);
  let base = item * (2u + p.head_dim);
  if (t == 0u) {
    partials[base] = run.m;
    partials[base + 1u] = run.l;
  }
  for (var c = 0u; c < MAX_DIMS_PER_THREAD; c++) {
    let d = own_dim(t, WG, c);
    if (d < p.head_dim) {
      partials[base + 2u + d] = run.acc[c];
    }
  }
}

// Phase 2 of split KV: workgroup (row i, head h) merges its slices into one Running state, m = the slices' max and
// each slice's l and acc rescaled by exp(m_s - m) (the correction main applies between chunks), then finishes z as
// main does. Empty slices (m_s = NEG_BIG) weigh 0 next to a seen key; a row with no key at all keeps l = 0 and acc = 0,
// so finish writes z = 0 before the head vectors.
@compute @workgroup_size(WG)
fn split_merge(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) t: u32) {
  let item = wg.y * nwg.x + wg.x;
  if (item >= p.q_rows * p.heads) {
    return;
  }
  let i = item / p.heads;
  let h = item % p.heads;
  let stride = 2u + p.head_dim;
  let first = item * p.splits * stride;
  var m = NEG_BIG;
  for (var s = 0u; s < p.splits; s++) {
    m = max(m, partials[first + s * stride]);
  }
  var l = 0.0;
  var acc: array<f32, MAX_DIMS_PER_THREAD>;
  for (var s = 0u; s < p.splits; s++) {
    let base = first + s * stride;
    let w = exp(partials[base] - m);
    l = fma(w, partials[base + 1u], l);
    for (var c = 0u; c < MAX_DIMS_PER_THREAD; c++) {
      let d = own_dim(t, WG, c);
      if (d < p.head_dim) {
        acc[c] = fma(w, partials[base + 2u + d], acc[c]);
      }
    }
  }
  finish(t, WG, i, h, head_params[h], patch_index(i, h), l, acc);
}
#endif

#if TILED
// Tiled prefill (FlashAttention-style; entry point tiled, define TILED): main streams every key a row sees from global
// memory once per (row, head), so a prefill of R rows reads K and V R times over. Here one workgroup serves a block of
// TILE_ROWS consecutive query rows of one head: tiles of up to TILE_KEYS keys are loaded into workgroup memory once
// (coalesced) and every row of the block scores against them, all TILE_ROWS x TILE_KEYS (row, key) pairs spread over
// the workgroup's threads. Each row keeps its own online softmax (m, l, acc) across the tiles, in the TILE_LANES
// threads that own its dims (lane + c * TILE_LANES, as finish takes them), and applies main's per-key rules per pair:
// the row's own causal limit and key range (keys outside it are masked, not scored), knockout, the temperature of
// its row; then finish applies head scale, mean replacement, patch and steer. A (row, head) whose z ignores
// softmax · V (scale 0, mean-ablated, patched) gets an empty range, as in main.
// The tiles walk the keys that some row of the block needs, in order: each tile starts at the first such key at or
// after the previous tile's end, so rows with disjoint key ranges (a block that straddles two images of a vision
// tower, a row whose window lies far behind the others) cost their ranges, not the span between them.
// Not here (the launcher runs main for them): pattern capture (every (row, key) probability would need the row's
// final normaliser after the tiles, i.e. main's stored-score pass per row) and VARIANTS (rows read different key
// sequences, so no tile is shared).
override TILE_ROWS: u32 = 4u;    // query rows per workgroup (<= MAX_TILE_ROWS)
override TILE_LANES: u32 = 16u;  // threads per row: TILE_LANES * MAX_DIMS_PER_THREAD >= head_dim
override TILE_THREADS: u32 = 64u; // TILE_ROWS * TILE_LANES
override TILE_KEYS: u32 = 16u;   // keys per tile
// Workgroup array lengths (set by the launcher, which checks them against maxComputeWorkgroupStorageSize): the block's
// q rows [TILE_ROWS, head_dim], one K-or-V tile [TILE_KEYS, head_dim + 1] (a padded row: the threads scoring
// consecutive keys of a row read addresses head_dim + 1 apart, not in one memory bank), scores and probabilities.
override TILE_Q: u32 = 1024u;
override TILE_KV: u32 = 1040u;
override TILE_S: u32 = 64u;
const MAX_TILE_ROWS: u32 = 16u;
const NO_KEY: u32 = 0xffffffffu;

var<workgroup> q_blk: array<f32, TILE_Q>;
var<workgroup> kv_tile: array<f32, TILE_KV>;
var<workgroup> tile_s: array<f32, TILE_S>; // [TILE_ROWS, TILE_KEYS] scores (NEG_BIG: masked)
var<workgroup> tile_p: array<f32, TILE_S>; // [TILE_ROWS, TILE_KEYS] exp(s - m) of the row's pairs

// Keys first .. first + n - 1 of K (or V) of the kv head at kv_base into kv_tile rows 0 .. n - 1; every thread calls
// it, consecutive threads reading consecutive elements of a key row (coalesced).
fn load_tile(t: u32, src_is_v: bool, first: u32, n: u32, kv_base: u32) {
  let kstride = p.head_dim + 1u;
  for (var e = t; e < n * p.head_dim; e += TILE_THREADS) {
    let c = e / p.head_dim;
    let d = e - c * p.head_dim;
    let row = (first + c) * p.kv_stride + kv_base + d;
    if (src_is_v) {
      kv_tile[c * kstride + d] = v[p.v_off + row];
    } else {
      kv_tile[c * kstride + d] = k[p.k_off + row];
    }
  }
}

@compute @workgroup_size(TILE_THREADS)
fn tiled(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
         @builtin(local_invocation_index) t: u32) {
  let blocks = (p.q_rows + TILE_ROWS - 1u) / TILE_ROWS;
  let item = wg.y * nwg.x + wg.x;
  if (item >= blocks * p.heads) {
    return; // uniform per workgroup: safe before barriers
  }
  // Neighbouring workgroups take the same head (the same K and V rows) for other blocks: they share the cache.
  let h = item / blocks;
  let i0 = (item % blocks) * TILE_ROWS;
  let kv_base = (h / (p.heads / p.kv_heads)) * p.head_dim;
  let hp = head_params[h];
#if KNOCKOUT
  let knock_head = (hp.replace & 2u) != 0u;
#endif

  // Every row's keys [rb, re) and temperature, in every thread (uniform: the tile walk below has barriers and
  // depends on all of them); rows past q_rows and rows whose z ignores softmax · V are empty.
  var rb: array<u32, MAX_TILE_ROWS>;
  var re: array<u32, MAX_TILE_ROWS>;
  var ra: array<f32, MAX_TILE_ROWS>;
  var last = 0u; // the end of the block's last range
  for (var r = 0u; r < TILE_ROWS; r++) {
    let i = i0 + r;
    if (i < p.q_rows) {
      let keys = row_keys(i, hp);
      rb[r] = keys.begin;
      re[r] = select(keys.begin, keys.end, keys.end > keys.begin && !discarded(hp, patch_index(i, h)));
      ra[r] = keys.alpha;
      if (re[r] > rb[r]) {
        last = max(last, re[r]); // an empty range may start past n_keys: it sets no bound on the keys loaded
      }
    }
  }

  for (var e = t; e < TILE_ROWS * p.head_dim; e += TILE_THREADS) {
    let r = e / p.head_dim;
    let i = i0 + r;
    var x = 0.0;
    if (i < p.q_rows) {
      x = q[p.q_off + i * p.q_stride + h * p.head_dim + (e - r * p.head_dim)];
    }
    q_blk[e] = x;
  }

  // This thread's row and lane (the pairs it exponentiates, the dims of z it owns).
  let r_own = t / TILE_LANES;
  let lane = t % TILE_LANES;
  let i_own = i0 + r_own;
  var m = NEG_BIG;
  var l = 0.0;
  var acc: array<f32, MAX_DIMS_PER_THREAD>;
  let kstride = p.head_dim + 1u;

  var next = 0u;
  loop {
    // The tile: from the first key at or after `next` that some row needs, TILE_KEYS keys (clipped at `last`).
    var first = NO_KEY;
    for (var r = 0u; r < TILE_ROWS; r++) {
      if (re[r] > next && re[r] > rb[r]) {
        first = min(first, max(next, rb[r]));
      }
    }
    if (first == NO_KEY) {
      break;
    }
    let n = min(TILE_KEYS, last - first);
    next = first + n;

    load_tile(t, false, first, n, kv_base);
    workgroupBarrier(); // also orders the q block's stores before the first scores

    // Scores of the (row, key) pairs, spread over all threads; a key outside its row's range (or knocked out for the
    // row) is masked without its q · k.
    for (var e = t; e < TILE_ROWS * TILE_KEYS; e += TILE_THREADS) {
      let r = e / TILE_KEYS;
      let c = e - r * TILE_KEYS;
      let key = first + c;
      var s = NEG_BIG;
      var seen = c < n && key >= rb[r] && key < re[r];
#if KNOCKOUT
      seen = seen && !(knock_head && knocked(i0 + r, key));
#endif
      if (seen) {
        var dot = 0.0;
        let qb = r * p.head_dim;
        let kb = c * kstride;
        for (var d = 0u; d < p.head_dim; d++) {
          dot = fma(q_blk[qb + d], kv_tile[kb + d], dot);
        }
        s = tempered(dot, key, ra[r]);
      }
      tile_s[e] = s;
    }
    workgroupBarrier();

    // Online softmax per row, in each of the row's lanes (the same values in all of them): the row's keys in this
    // tile [lo, hi), their max, the rescaling of l and acc; each lane exponentiates its own pairs once.
    let lo = min(max(rb[r_own], first), next) - first;
    let hi = max(min(re[r_own], next), first) - first;
    var m_new = m;
    for (var c = lo; c < hi; c++) {
      m_new = max(m_new, tile_s[r_own * TILE_KEYS + c]);
    }
    let correction = exp(m - m_new);
    l *= correction;
    for (var c = 0u; c < MAX_DIMS_PER_THREAD; c++) {
      acc[c] *= correction;
    }
    for (var c = lo + lane; c < hi; c += TILE_LANES) {
      let s = tile_s[r_own * TILE_KEYS + c];
      // A masked key (knocked out) weighs 0 even while every key so far is masked (m_new still NEG_BIG), as in main.
      tile_p[r_own * TILE_KEYS + c] = select(0.0, exp(s - m_new), s > NEG_BIG);
    }
    m = m_new;
    // K is no longer read (the scores are in tile_s): V takes its place.
    load_tile(t, true, first, n, kv_base);
    workgroupBarrier();

    for (var c = lo; c < hi; c++) {
      let pc = tile_p[r_own * TILE_KEYS + c];
      l += pc;
      for (var j = 0u; j < MAX_DIMS_PER_THREAD; j++) {
        let d = lane + j * TILE_LANES;
        if (d < p.head_dim) {
          acc[j] = fma(pc, kv_tile[c * kstride + d], acc[j]);
        }
      }
    }
    workgroupBarrier(); // before the next tile's K overwrites V
  }

  if (i_own < p.q_rows) {
    finish(lane, TILE_LANES, i_own, h, hp, patch_index(i_own, h), l, acc);
  }
}
#endif
