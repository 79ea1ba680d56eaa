// matmul 'smem' (after matmul_common.wgsl): the workgroup-memory tiled variant for GPUs. A workgroup of TX x TY
// threads computes a BM x BN block of y (BM = TY*4 rows of x, BN = TX*4 rows of W), staging BK-deep slices of
// both operands in workgroup memory so that each loaded element serves BN (or BM) products. Thread (tx, ty) owns
// rows ty + i*TY and columns tx + j*TX (i, j < 4): adjacent threads read adjacent workgroup-memory words.
// TX, TY come from the adapter's limits (invocations per workgroup, workgroup storage).
// GATED: a second W slice (the up projection) staged beside the first, each x slice serving both.

override TX: u32 = 16u;
override TY: u32 = 16u;
const BK: u32 = 16u;

var<workgroup> xs: array<f32, BK * TY * 4u>; // [BK, BM] slice of x, k-major
var<workgroup> ws: array<f32, BK * TX * 4u>; // [BK, BN] slice of W, k-major
#if GATED
var<workgroup> wsu: array<f32, BK * TX * 4u>; // [BK, BN] slice of Wu, k-major
#endif

@compute @workgroup_size(TX, TY)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>, @builtin(local_invocation_index) li: u32) {
  let BM = TY * 4u;
  let BN = TX * 4u;
  let threads = TX * TY;
  let m_base = wg.y * BM;
  let n_base = wg.x * BN;
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
  for (var k0 = 0u; k0 < p.K; k0 += BK) {
#if VEC4
    // Four k per load: BM (BN) rows x BK/4 vec4 per slice.
    for (var i = li; i < BM * (BK / 4u); i += threads) {
      let mm = i / (BK / 4u);
      let kq = i % (BK / 4u);
      let k4 = k0 / 4u + kq;
      var v = vec4<f32>();
      if (k4 < p.K / 4u) {
        v = x[(p.x_off + min(m_base + mm, p.M - 1u) * p.x_stride) / 4u + k4];
      }
      for (var c = 0u; c < 4u; c++) {
        xs[(kq * 4u + c) * BM + mm] = v[c];
      }
    }
    for (var i = li; i < BN * (BK / 4u); i += threads) {
      let nn = i / (BK / 4u);
      let kq = i % (BK / 4u);
      let k4 = k0 / 4u + kq;
      var v = vec4<f32>();
#if GATED
      var vu = vec4<f32>();
#endif
      if (k4 < p.K / 4u) {
        v = load_w4(min(n_base + nn, p.N - 1u) * (p.K / 4u) + k4);
#if GATED
        vu = load_w4u(min(n_base + nn, p.N - 1u) * (p.K / 4u) + k4);
#endif
      }
      for (var c = 0u; c < 4u; c++) {
        ws[(kq * 4u + c) * BN + nn] = v[c];
#if GATED
        wsu[(kq * 4u + c) * BN + nn] = vu[c];
#endif
      }
    }
#else
    for (var i = li; i < BM * BK; i += threads) {
      let mm = i / BK;
      let k = k0 + i % BK;
      var v = 0.0;
      if (k < p.K) {
        v = x[p.x_off + min(m_base + mm, p.M - 1u) * p.x_stride + k];
      }
      xs[(i % BK) * BM + mm] = v;
    }
    for (var i = li; i < BN * BK; i += threads) {
      let nn = i / BK;
      let k = k0 + i % BK;
      var v = 0.0;
#if GATED
      var vu = 0.0;
#endif
      if (k < p.K) {
        v = load_w(min(n_base + nn, p.N - 1u) * p.K + k);
#if GATED
        vu = load_wu(min(n_base + nn, p.N - 1u) * p.K + k);
#endif
      }
      ws[(i % BK) * BN + nn] = v;
#if GATED
      wsu[(i % BK) * BN + nn] = vu;
#endif
    }
#endif
    workgroupBarrier();
    for (var kk = 0u; kk < BK; kk++) {
      let xo = kk * BM + lid.y;
      let wo = kk * BN + lid.x;
      let a = vec4<f32>(xs[xo], xs[xo + TY], xs[xo + 2u * TY], xs[xo + 3u * TY]);
      let bw = vec4<f32>(ws[wo], ws[wo + TX], ws[wo + 2u * TX], ws[wo + 3u * TX]);
      acc0 += a.x * bw;
      acc1 += a.y * bw;
      acc2 += a.z * bw;
      acc3 += a.w * bw;
#if GATED
      let bwu = vec4<f32>(wsu[wo], wsu[wo + TX], wsu[wo + 2u * TX], wsu[wo + 3u * TX]);
      up0 += a.x * bwu;
      up1 += a.y * bwu;
      up2 += a.z * bwu;
      up3 += a.w * bwu;
#endif
    }
    workgroupBarrier();
  }
  let acc = array<vec4<f32>, 4>(acc0, acc1, acc2, acc3);
#if GATED
  let acc_u = array<vec4<f32>, 4>(up0, up1, up2, up3);
#endif
  for (var i = 0u; i < 4u; i++) {
    let m = m_base + lid.y + i * TY;
    if (m >= p.M) {
      break;
    }
    for (var j = 0u; j < 4u; j++) {
      let n = n_base + lid.x + j * TX;
      if (n < p.N) {
#if GATED
        store_gated(m, n, acc[i][j], acc_u[i][j]);
#else
        store_out(m, n, acc[i][j]);
#endif
      }
    }
  }
}
