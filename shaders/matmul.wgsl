// y = act(x · Wᵀ + b) + r        x: [M, K] f32 rows (offset/stride), W: [N, K] in its stored dtype (Linear
// layout, out x in), b: [N], r: [M, N] residual. Register-tiled: each thread computes a TM x TN block, a
// workgroup covers (WG_Y*TM) x (WG_X*TN) outputs. load_w / load_b come from the launcher (dtype-specific).

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
@group(0) @binding(1) var<storage, read> x: array<f32>;       // [M, K] activations
@group(0) @binding(2) var<storage, read> w: array<u32>;       // [N, K] weight, packed by dtype
#if HAS_BIAS
@group(0) @binding(3) var<storage, read> b: array<u32>;       // [N] bias, packed by dtype
#endif
#if HAS_RESIDUAL
@group(0) @binding(4) var<storage, read> r: array<f32>;       // [M, N] residual added after act
#endif
@group(0) @binding(5) var<storage, read_write> y: array<f32>; // [M, N] output

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
