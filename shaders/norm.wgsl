// Row normalisation, one workgroup per row with the reductions in workgroup memory.
//   LayerNorm (torch):     y = (x - mean) / sqrt(var + eps) * w + b     var biased (divides by cols)
//   RMSNorm (HF Llama, RMS define): y = w * (x * rsqrt(mean(x^2) + eps))
// LayerNorm makes two passes (mean, then the centred sum of squares) so the variance does not cancel
// catastrophically when |mean| >> std. Rows above the per-dimension workgroup limit are folded over x and y
// by the launcher; load_w / load_b come from the launcher (dtype-specific).

struct Params {
  rows: u32,
  cols: u32,
  x_off: u32,     // element offset of row 0 of x
  x_stride: u32,  // elements between rows of x
  y_off: u32,
  y_stride: u32,
  eps: f32,
}

@group(0) @binding(0) var<uniform> p: Params;                 // sizes and views
@group(0) @binding(1) var<storage, read> x: array<f32>;       // [rows, cols] activations
@group(0) @binding(2) var<storage, read> w: array<u32>;       // [cols] scale, packed by dtype
#if HAS_BIAS
@group(0) @binding(3) var<storage, read> b: array<u32>;       // [cols] shift, packed by dtype (LayerNorm)
#endif
@group(0) @binding(4) var<storage, read_write> y: array<f32>; // [rows, cols] output (never aliases x)

// Threads per row, chosen by the launcher: 64 for rows up to 1024 columns (CPU drivers such as SwiftShader run
// a workgroup's invocations as coroutines, so idle threads and barriers cost real time), 256 above.
override WG: u32 = 256u;
override PARTS: u32 = 16u; // WG = PARTS * PARTS

var<workgroup> red: array<f32, WG>;
var<workgroup> partial: array<f32, PARTS>;

// Sum of `v` over the workgroup in two levels with two barriers (barriers, not arithmetic, dominate on CPU
// drivers): PARTS threads each add a column of PARTS values, then every thread adds the PARTS partial sums in
// the same order. Must be called in workgroup-uniform control flow.
fn workgroup_sum(v: f32, t: u32) -> f32 {
  red[t] = v;
  workgroupBarrier();
  if (t < PARTS) {
    var s = 0.0;
    for (var k = 0u; k < PARTS; k++) {
      s += red[k * PARTS + t]; // consecutive threads read consecutive words
    }
    partial[t] = s;
  }
  workgroupBarrier();
  var total = 0.0;
  for (var k = 0u; k < PARTS; k++) {
    total += partial[k];
  }
  // The next call writes red, then passes a barrier before rewriting partial: no third barrier needed.
  return total;
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) t: u32) {
  let row = wg.y * nwg.x + wg.x;
  if (row >= p.rows) {
    return; // uniform per workgroup: safe before barriers
  }
  let xb = p.x_off + row * p.x_stride;
  let yb = p.y_off + row * p.y_stride;
  let n = f32(p.cols);

#if RMS
  var ss = 0.0;
  for (var c = t; c < p.cols; c += WG) {
    let v = x[xb + c];
    ss = fma(v, v, ss);
  }
  let inv = inverseSqrt(workgroup_sum(ss, t) / n + p.eps);
  for (var c = t; c < p.cols; c += WG) {
    y[yb + c] = load_w(c) * (x[xb + c] * inv);
  }
#else
  var s = 0.0;
  for (var c = t; c < p.cols; c += WG) {
    s += x[xb + c];
  }
  let mean = workgroup_sum(s, t) / n;
  var ss = 0.0;
  for (var c = t; c < p.cols; c += WG) {
    let d = x[xb + c] - mean;
    ss = fma(d, d, ss);
  }
  let inv = 1.0 / sqrt(workgroup_sum(ss, t) / n + p.eps);
  for (var c = t; c < p.cols; c += WG) {
    var v = (x[xb + c] - mean) * inv * load_w(c);
#if HAS_BIAS
    v += load_b(c);
#endif
    y[yb + c] = v;
  }
#endif
}
