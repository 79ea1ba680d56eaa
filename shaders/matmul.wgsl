// y = act(x · Wᵀ + b) + r        x: [M, K] f32 rows (offset/stride), W: [N, K] in its stored dtype (Linear
// layout, out x in), b: [N], r: [M, N] residual. Register-tiled: each thread computes a TM x TN block, a
// workgroup covers (WG_Y*TM) x (WG_X*TN) outputs. load_w / load_b come from the launcher (dtype-specific).
// VEC4 (K, x offset and x stride multiples of 4): x and W are read four k at a time (vec4 loads, one
// unpack per two halves), four times fewer loads than the scalar path that serves any shape.

struct Params {
  M: u32,
  N: u32,
  K: u32,
  x_off: u32,     // element offset of row 0 of x
  x_stride: u32,  // elements between rows of x
  y_off: u32,
  y_stride: u32,
  r_off: u32,
  r_stride: u32,
  b_off: u32,     // first bias element of this call (a weight split in row blocks runs block by block)
}

@group(0) @binding(0) var<uniform> p: Params;                 // sizes and views
#if VEC4
@group(0) @binding(1) var<storage, read> x: array<vec4<f32>>; // [M, K/4] activations
#if W_F32
@group(0) @binding(2) var<storage, read> w4: array<vec4<f32>>; // [N, K/4] weight
#else
@group(0) @binding(2) var<storage, read> w4: array<vec2<u32>>; // [N, K/4] weight, four halves per element
#endif
#else
@group(0) @binding(1) var<storage, read> x: array<f32>;       // [M, K] activations
@group(0) @binding(2) var<storage, read> w: array<u32>;       // [N, K] weight, packed by dtype
#endif
#if HAS_BIAS
@group(0) @binding(3) var<storage, read> b: array<u32>;       // [N] bias, packed by dtype
#endif
#if HAS_RESIDUAL
@group(0) @binding(4) var<storage, read> r: array<f32>;       // [M, N] residual added after act
#endif
@group(0) @binding(5) var<storage, read_write> y: array<f32>; // [M, N] output

#if VEC4
fn load_w4(i: u32) -> vec4<f32> {
#if W_F32
  return w4[i];
#elif W_F16
  let q = w4[i];
  return vec4<f32>(unpack2x16float(q.x), unpack2x16float(q.y));
#else
  let q = w4[i];
  return vec4<f32>(bitcast<f32>(q.x << 16u), bitcast<f32>(q.x & 0xffff0000u), bitcast<f32>(q.y << 16u), bitcast<f32>(q.y & 0xffff0000u));
#endif
}
#endif

override WG_X: u32 = 8u;
override WG_Y: u32 = 8u;
const TM: u32 = 4u;
const TN: u32 = 4u;

@compute @workgroup_size(WG_X, WG_Y)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
  let n0 = (wg.x * WG_X + lid.x) * TN;
  let m0 = (wg.y * WG_Y + lid.y) * TM;
  if (n0 >= p.N || m0 >= p.M) {
    return;
  }
  // Rows/cols past the edge are clamped for loading and skipped when storing.
  var xrow: array<u32, TM>;
  var wrow: array<u32, TN>;
  for (var i = 0u; i < TM; i++) {
    xrow[i] = p.x_off + min(m0 + i, p.M - 1u) * p.x_stride;
  }
  for (var j = 0u; j < TN; j++) {
    wrow[j] = min(n0 + j, p.N - 1u) * p.K;
  }
  var acc: array<array<f32, TN>, TM>;
#if VEC4
  // Named registers rather than indexed private arrays (which compilers may spill): row i of the block
  // accumulates x_i · [w_0 w_1 w_2 w_3] as one vector-matrix product per four k.
  let x0 = xrow[0] / 4u;
  let x1 = xrow[1] / 4u;
  let x2 = xrow[2] / 4u;
  let x3 = xrow[3] / 4u;
  let w0 = wrow[0] / 4u;
  let w1 = wrow[1] / 4u;
  let w2 = wrow[2] / 4u;
  let w3 = wrow[3] / 4u;
  var acc0 = vec4<f32>();
  var acc1 = vec4<f32>();
  var acc2 = vec4<f32>();
  var acc3 = vec4<f32>();
  for (var k4 = 0u; k4 < p.K / 4u; k4++) {
    let bm = mat4x4<f32>(load_w4(w0 + k4), load_w4(w1 + k4), load_w4(w2 + k4), load_w4(w3 + k4));
    acc0 += x[x0 + k4] * bm;
    acc1 += x[x1 + k4] * bm;
    acc2 += x[x2 + k4] * bm;
    acc3 += x[x3 + k4] * bm;
  }
  for (var j = 0u; j < TN; j++) {
    acc[0][j] = acc0[j];
    acc[1][j] = acc1[j];
    acc[2][j] = acc2[j];
    acc[3][j] = acc3[j];
  }
#else
  for (var k = 0u; k < p.K; k++) {
    var a: array<f32, TM>;
    var bw: array<f32, TN>;
    for (var i = 0u; i < TM; i++) {
      a[i] = x[xrow[i] + k];
    }
    for (var j = 0u; j < TN; j++) {
      bw[j] = load_w(wrow[j] + k);
    }
    for (var i = 0u; i < TM; i++) {
      for (var j = 0u; j < TN; j++) {
        acc[i][j] = fma(a[i], bw[j], acc[i][j]);
      }
    }
  }
#endif
  for (var i = 0u; i < TM; i++) {
    let m = m0 + i;
    if (m >= p.M) {
      break;
    }
    for (var j = 0u; j < TN; j++) {
      let n = n0 + j;
      if (n >= p.N) {
        break;
      }
      var v = acc[i][j];
#if HAS_BIAS
      v += load_b(p.b_off + n);
#endif
      v = act(v);
#if HAS_RESIDUAL
      v += r[p.r_off + m * p.r_stride + n];
#endif
      y[p.y_off + m * p.y_stride + n] = v;
    }
  }
}
