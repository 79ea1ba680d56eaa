// Element-wise kernels over rows x cols views (each with its own offset and stride), one invocation per
// element; the launcher folds the workgroup count over x and y. Entry points:
//   gated_act: out = act(a) * b       (SwiGLU / GeGLU: a = gate, b = up; act chosen by define)
//   add:       out = a + b
//   copy_rows: out = a                (row subsets, column slices, concatenation along columns)

struct Params {
  total: u32,     // rows * cols
  cols: u32,
  a_off: u32,     // element offset of row 0 of a
  a_stride: u32,  // elements between rows of a
  b_off: u32,
  b_stride: u32,
  o_off: u32,
  o_stride: u32,
}

@group(0) @binding(0) var<uniform> p: Params;                   // sizes and views
@group(0) @binding(1) var<storage, read> a: array<f32>;         // first operand (gate / a / src)
@group(0) @binding(2) var<storage, read> b: array<f32>;         // second operand (up / b); unused by copy_rows
@group(0) @binding(3) var<storage, read_write> o: array<f32>;   // output (never aliases a or b)

override WG: u32 = 256u;

// Element index of this invocation (>= total for the padding of the last workgroups).
fn element(wg: vec3<u32>, nwg: vec3<u32>, t: u32) -> u32 {
  return (wg.y * nwg.x + wg.x) * WG + t;
}

@compute @workgroup_size(WG)
fn gated_act(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_index) t: u32) {
  let i = element(wg, nwg, t);
  if (i >= p.total) {
    return;
  }
  let r = i / p.cols;
  let c = i - r * p.cols;
  o[p.o_off + r * p.o_stride + c] = act(a[p.a_off + r * p.a_stride + c]) * b[p.b_off + r * p.b_stride + c];
}

@compute @workgroup_size(WG)
fn add(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
       @builtin(local_invocation_index) t: u32) {
  let i = element(wg, nwg, t);
  if (i >= p.total) {
    return;
  }
  let r = i / p.cols;
  let c = i - r * p.cols;
  o[p.o_off + r * p.o_stride + c] = a[p.a_off + r * p.a_stride + c] + b[p.b_off + r * p.b_stride + c];
}

@compute @workgroup_size(WG)
fn copy_rows(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_index) t: u32) {
  let i = element(wg, nwg, t);
  if (i >= p.total) {
    return;
  }
  let r = i / p.cols;
  let c = i - r * p.cols;
  o[p.o_off + r * p.o_stride + c] = a[p.a_off + r * p.a_stride + c];
}
