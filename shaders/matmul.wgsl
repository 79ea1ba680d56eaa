// matmul 'tiled' (after matmul_common.wgsl): register-tiled, no workgroup memory. Each thread computes a TM x TN
// block, a workgroup covers (WG_Y*TM) x (WG_X*TN) outputs. The variant for CPU adapters (where workgroup memory
// and barriers cost more than they save) and for shapes too small for the workgroup-memory tiles.
// VEC4: x and W are read four k at a time, four times fewer loads than the scalar path that serves any shape.
// GATED: the same tiles over both projections, each x load serving both (a second accumulator per output).

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
#if GATED
  var acc_u: array<array<f32, TN>, TM>;
#endif
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
#if GATED
  var up0 = vec4<f32>();
  var up1 = vec4<f32>();
  var up2 = vec4<f32>();
  var up3 = vec4<f32>();
#endif
  let k4n = p.K / 4u;  // hoisted by hand: SwiftShader's Subzero JIT leaves loop invariants in the loop
  for (var k4 = 0u; k4 < k4n; k4++) {
    let bm = mat4x4<f32>(load_w4(w0 + k4), load_w4(w1 + k4), load_w4(w2 + k4), load_w4(w3 + k4));
#if GATED
    let xv0 = x[x0 + k4];
    let xv1 = x[x1 + k4];
    let xv2 = x[x2 + k4];
    let xv3 = x[x3 + k4];
    acc0 += xv0 * bm;
    acc1 += xv1 * bm;
    acc2 += xv2 * bm;
    acc3 += xv3 * bm;
    let um = mat4x4<f32>(load_w4u(w0 + k4), load_w4u(w1 + k4), load_w4u(w2 + k4), load_w4u(w3 + k4));
    up0 += xv0 * um;
    up1 += xv1 * um;
    up2 += xv2 * um;
    up3 += xv3 * um;
#else
    acc0 += x[x0 + k4] * bm;
    acc1 += x[x1 + k4] * bm;
    acc2 += x[x2 + k4] * bm;
    acc3 += x[x3 + k4] * bm;
#endif
  }
  for (var j = 0u; j < TN; j++) {
    acc[0][j] = acc0[j];
    acc[1][j] = acc1[j];
    acc[2][j] = acc2[j];
    acc[3][j] = acc3[j];
#if GATED
    acc_u[0][j] = up0[j];
    acc_u[1][j] = up1[j];
    acc_u[2][j] = up2[j];
    acc_u[3][j] = up3[j];
#endif
  }
#else
  let kn = p.K;
  for (var k = 0u; k < kn; k++) {
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
#if GATED
    for (var j = 0u; j < TN; j++) {
      bw[j] = load_wu(wrow[j] + k);
    }
    for (var i = 0u; i < TM; i++) {
      for (var j = 0u; j < TN; j++) {
        acc_u[i][j] = fma(a[i], bw[j], acc_u[i][j]);
      }
    }
#endif
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
#if GATED
      store_gated(m, n, acc[i][j], acc_u[i][j]);
#else
      store_out(m, n, acc[i][j]);
#endif
    }
  }
}
