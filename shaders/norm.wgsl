// Row normalisation, one workgroup per row; the row sums go through shaders/workgroup.wgsl (prepended).
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
// a workgroup's invocations as coroutines, so idle threads and barriers cost real time), 256 above. The row sums
// are shaders/workgroup.wgsl's workgroup_sum (with PARTS there), in its plain or subgroup form.
override WG: u32 = 256u;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, ids: Invocation) {
  let t = ids.t;
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
  let inv = inverseSqrt(workgroup_sum(ss, ids) / n + p.eps);
  for (var c = t; c < p.cols; c += WG) {
    y[yb + c] = load_w(c) * (x[xb + c] * inv);
  }
#else
  var s = 0.0;
  for (var c = t; c < p.cols; c += WG) {
    s += x[xb + c];
  }
  let mean = workgroup_sum(s, ids) / n;
  var ss = 0.0;
  for (var c = t; c < p.cols; c += WG) {
    let d = x[xb + c] - mean;
    ss = fma(d, d, ss);
  }
  let inv = 1.0 / sqrt(workgroup_sum(ss, ids) / n + p.eps);
  for (var c = t; c < p.cols; c += WG) {
    var v = (x[xb + c] - mean) * inv * load_w(c);
#if HAS_BIAS
    v += load_b(c);
#endif
    y[yb + c] = v;
  }
#endif
}
