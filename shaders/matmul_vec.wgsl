// matmul for few rows of x (decode), after matmul_common.wgsl. Three kernels:
// - gemv_rows: each thread owns eight output columns (eight rows of W) for one row of x and runs over all of K.
//   No workgroup memory and no barrier: the variant for CPU adapters, where a lane's loads cost the same
//   whether or not its neighbours read adjacent words.
// - gemv_coop: a workgroup owns four output columns for one row of x; its WG threads stride over K (adjacent
//   threads read adjacent words of a W row: coalesced on GPUs) and reduce their vec4 of partial sums: by a tree in
//   workgroup memory, or in the subgroup form (SUBGROUPS) by workgroup.wgsl's workgroup_sum4 (one barrier). With
//   PARTIALS_OUT the workgroups of one output split K (wg.z = split) and write partial sums.
// - splitk_reduce (REDUCE): sums the splits' partial sums of one output, then bias, activation, residual.
// Every W element is read once per row of x in all three.
// NORM (matmul_common.wgsl): each x load is scaled by the norm weight and its square summed beside the dot products
// (gemv_coop: the sums of squares reduced with the dot products), then the row's rms scale multiplies each sum.
// GATED (matmul_common.wgsl): gemv_rows with four (gate, up) output pairs per thread; gemv_coop with a second
// accumulator and reduction for the up projection. Split K has no gated form (the launcher falls back).

override WG: u32 = 64u;

#if REDUCE
@compute @workgroup_size(WG)
fn splitk_reduce(@builtin(global_invocation_id) gid: vec3<u32>) {
  let i = gid.x;
  if (i >= p.M * p.N) {
    return;
  }
  var v = 0.0;
  for (var s = 0u; s < p.splits; s++) {
    v += part[s * p.M * p.N + i];
  }
  store_out(i / p.N, i % p.N, v);
}
#else

// First element of W row n (clamped: a thread's rows past the edge load a valid row and store nothing).
fn row_base(n: u32) -> u32 {
  return min(n, p.N - 1u) * p.K;
}

#if !PARTIALS_OUT
// Eight accumulators per thread, each x load serving eight rows of weights (measured 10-20% faster than four on
// SwiftShader): eight output columns, or (GATED) four (gate, up) pairs: rows n0..n0+3 of the gate projection in
// a0..a3 and the same rows of the up projection in a4..a7 (eight pairs would double the live registers).
#if GATED
const ROWS_COLS = 4u;
#else
const ROWS_COLS = 8u;
#endif

@compute @workgroup_size(WG)
fn gemv_rows(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
  let n0 = (wg.x * WG + lid.x) * ROWS_COLS;
  let m = wg.y;
  if (n0 >= p.N) {
    return;
  }
  let xr = p.x_off + m * p.x_stride;
  let r0 = row_base(n0);
  let r1 = row_base(n0 + 1u);
  let r2 = row_base(n0 + 2u);
  let r3 = row_base(n0 + 3u);
#if GATED
  let r4 = r0;
  let r5 = r1;
  let r6 = r2;
  let r7 = r3;
#else
  let r4 = row_base(n0 + 4u);
  let r5 = row_base(n0 + 5u);
  let r6 = row_base(n0 + 6u);
  let r7 = row_base(n0 + 7u);
#endif
  var a0 = 0.0;
  var a1 = 0.0;
  var a2 = 0.0;
  var a3 = 0.0;
  var a4 = 0.0;
  var a5 = 0.0;
  var a6 = 0.0;
  var a7 = 0.0;
#if NORM
  var ss = 0.0;
#endif
  // Every loop-invariant index is computed before the loop: SwiftShader's Subzero JIT does not hoist them, and the
  // eight row bases' divisions and the K load inside the loop cost 12-30% of a GEMV there (GPU compilers hoist).
#if VEC4
  let xb = xr / 4u;
  let b0 = r0 / 4u;
  let b1 = r1 / 4u;
  let b2 = r2 / 4u;
  let b3 = r3 / 4u;
  let b4 = r4 / 4u;
  let b5 = r5 / 4u;
  let b6 = r6 / 4u;
  let b7 = r7 / 4u;
  let k4n = p.K / 4u;
  for (var k4 = 0u; k4 < k4n; k4++) {
#if NORM
    let xv = x_norm4(xb + k4, k4, &ss);
#else
    let xv = x[xb + k4];
#endif
    a0 += dot(xv, load_w4(b0 + k4));
    a1 += dot(xv, load_w4(b1 + k4));
    a2 += dot(xv, load_w4(b2 + k4));
    a3 += dot(xv, load_w4(b3 + k4));
    a4 += dot(xv, load_w4_hi(b4 + k4));
    a5 += dot(xv, load_w4_hi(b5 + k4));
    a6 += dot(xv, load_w4_hi(b6 + k4));
    a7 += dot(xv, load_w4_hi(b7 + k4));
  }
#else
  let kn = p.K;
  for (var k = 0u; k < kn; k++) {
#if NORM
    let xv = x_norm(xr + k, k, &ss);
#else
    let xv = x[xr + k];
#endif
    a0 = fma(xv, load_w(r0 + k), a0);
    a1 = fma(xv, load_w(r1 + k), a1);
    a2 = fma(xv, load_w(r2 + k), a2);
    a3 = fma(xv, load_w(r3 + k), a3);
    a4 = fma(xv, load_w_hi(r4 + k), a4);
    a5 = fma(xv, load_w_hi(r5 + k), a5);
    a6 = fma(xv, load_w_hi(r6 + k), a6);
    a7 = fma(xv, load_w_hi(r7 + k), a7);
  }
#endif
#if NORM
  let sc = rms_scale(ss);
#else
  let sc = 1.0;
#endif
  let acc = array<f32, 8>(a0, a1, a2, a3, a4, a5, a6, a7);
  for (var j = 0u; j < ROWS_COLS; j++) {
    if (n0 + j < p.N) {
#if GATED
      store_gated(m, n0 + j, acc[j] * sc, acc[j + 4u] * sc);
#else
      store_out(m, n0 + j, acc[j] * sc);
#endif
    }
  }
}

// Rows 4..7 of a gemv_rows thread: four more rows of W, or (GATED) the up projection's rows of the first four.
#if VEC4
fn load_w4_hi(i: u32) -> vec4<f32> {
#if GATED
  return load_w4u(i);
#else
  return load_w4(i);
#endif
}
#else
fn load_w_hi(i: u32) -> f32 {
#if GATED
  return load_wu(i);
#else
  return load_w(i);
#endif
}
#endif
#endif

#if !SUBGROUPS
// The plain form's tree (workgroup.wgsl, prepended, declares its own `red` for workgroup_sum).
var<workgroup> red4: array<vec4<f32>, WG>;
#if GATED
var<workgroup> red4_u: array<vec4<f32>, WG>;
#endif
#if NORM
var<workgroup> red_ss: array<f32, WG>;
#endif
#endif

// WG must be a power of two (the launcher picks it). `ids` (workgroup.wgsl) is the same parameter in both forms.
@compute @workgroup_size(WG)
fn gemv_coop(@builtin(workgroup_id) wg: vec3<u32>, ids: Invocation) {
  let t = ids.t;
  let n0 = wg.x * 4u;
  let m = wg.y;
  let s = wg.z;
  let xr = p.x_off + m * p.x_stride;
  let r0 = row_base(n0);
  let r1 = row_base(n0 + 1u);
  let r2 = row_base(n0 + 2u);
  let r3 = row_base(n0 + 3u);
  let k_begin = s * p.k_chunk;
  let k_end = min(p.K, k_begin + p.k_chunk);
  var acc = vec4<f32>();
#if GATED
  var acc_u = vec4<f32>();
#endif
#if NORM
  var ss = 0.0;
#endif
#if VEC4
  let xb = xr / 4u;
  let w0 = r0 / 4u;
  let w1 = r1 / 4u;
  let w2 = r2 / 4u;
  let w3 = r3 / 4u;
  for (var k4 = k_begin / 4u + t; k4 < k_end / 4u; k4 += WG) {
#if NORM
    let xv = x_norm4(xb + k4, k4, &ss);
#else
    let xv = x[xb + k4];
#endif
    acc += vec4<f32>(dot(xv, load_w4(w0 + k4)), dot(xv, load_w4(w1 + k4)), dot(xv, load_w4(w2 + k4)), dot(xv, load_w4(w3 + k4)));
#if GATED
    acc_u += vec4<f32>(dot(xv, load_w4u(w0 + k4)), dot(xv, load_w4u(w1 + k4)), dot(xv, load_w4u(w2 + k4)), dot(xv, load_w4u(w3 + k4)));
#endif
  }
#else
  for (var k = k_begin + t; k < k_end; k += WG) {
#if NORM
    let xv = x_norm(xr + k, k, &ss);
#else
    let xv = x[xr + k];
#endif
    acc += xv * vec4<f32>(load_w(r0 + k), load_w(r1 + k), load_w(r2 + k), load_w(r3 + k));
#if GATED
    acc_u += xv * vec4<f32>(load_wu(r0 + k), load_wu(r1 + k), load_wu(r2 + k), load_wu(r3 + k));
#endif
  }
#endif
  // The four columns' sums over the workgroup (total[j]: output n0 + j; total_u: the up projection's).
#if SUBGROUPS
  // subgroupAdd, one slot per subgroup, one barrier (also for the pair).
#if GATED
  let sums = workgroup_sum4x2(acc, acc_u, ids);
  let total = sums[0];
  let total_u = sums[1];
#else
  let total = workgroup_sum4(acc, ids);
#endif
#if NORM
  let ss_total = workgroup_sum(ss, ids); // its own slots: a second barrier
#endif
#else
  // A tree in workgroup memory, log2(WG) barriers, both accumulators in the same steps.
  red4[t] = acc;
#if GATED
  red4_u[t] = acc_u;
#endif
#if NORM
  red_ss[t] = ss;
#endif
  workgroupBarrier();
  for (var h = WG / 2u; h > 0u; h >>= 1u) {
    if (t < h) {
      red4[t] += red4[t + h];
#if GATED
      red4_u[t] += red4_u[t + h];
#endif
#if NORM
      red_ss[t] += red_ss[t + h];
#endif
    }
    workgroupBarrier();
  }
  let total = red4[0];
#if GATED
  let total_u = red4_u[0];
#endif
#if NORM
  let ss_total = red_ss[0];
#endif
#endif
#if NORM
  let sc = rms_scale(ss_total);
#else
  let sc = 1.0;
#endif
  if (t < 4u && n0 + t < p.N) {
    let v = total[t] * sc;
#if PARTIALS_OUT
    part[(s * p.M + m) * p.N + n0 + t] = v;
#elif GATED
    store_gated(m, n0 + t, v, total_u[t] * sc);
#else
    store_out(m, n0 + t, v);
#endif
  }
}
#endif
