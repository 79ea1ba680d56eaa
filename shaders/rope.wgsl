// Rotary position embedding in place, Hugging Face rotate_half convention: for row r, head h and
// j < half = rotary_dim / 2, with (cos, sin) = table[r, j]:
//   a = x[j], b = x[j + half];  x[j] = a*cos - b*sin;  x[j + half] = b*cos + a*sin
// i.e. x * cos + rotate_half(x) * sin with cos/sin repeated over both halves. Only the first rotary_dim
// dims of each head turn (partial rotary); the rest stay. One invocation per (row, head, j); the launcher
// folds the workgroup count over x and y. The table holds any angle per (row, j), so 1-D, 2-D (vision) and
// multimodal (M-RoPE) position schemes are all a table built on the CPU.
// SECOND: one dispatch also turns the same rows of a second tensor (a decoder's q scratch and its K cache rows) with
// its own head count and view; invocations past `total` belong to it.

struct Params {
  total: u32,      // rows * heads * half
  heads: u32,
  head_dim: u32,
  half: u32,       // rotary_dim / 2
  x_off: u32,      // element offset of the first rotated row's head 0
  x_stride: u32,   // elements between rows of x
  table_row: u32,  // table row used by the first rotated row
  total2: u32,     // SECOND: rows * heads2 * half
  heads2: u32,
  x2_off: u32,
  x2_stride: u32,
}

@group(0) @binding(0) var<uniform> p: Params;                     // sizes and views
@group(0) @binding(1) var<storage, read> table: array<f32>;       // [table rows, half, 2] (cos, sin)
@group(0) @binding(2) var<storage, read_write> x: array<f32>;     // [.., heads * head_dim] rotated in place
#if SECOND
@group(0) @binding(3) var<storage, read_write> x2: array<f32>;    // [.., heads2 * head_dim] rotated in place
#endif

override WG: u32 = 256u;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) t: u32) {
  let i = (wg.y * nwg.x + wg.x) * WG + t;
  if (i < p.total) {
    let at = site(i, p.heads, p.x_off, p.x_stride);
    let cs = vec2<f32>(table[at.y], table[at.y + 1u]);
    let a = x[at.x];
    let b = x[at.x + p.half];
    x[at.x] = a * cs.x - b * cs.y;
    x[at.x + p.half] = b * cs.x + a * cs.y;
  }
#if SECOND
  else if (i - p.total < p.total2) {
    let at = site(i - p.total, p.heads2, p.x2_off, p.x2_stride);
    let cs = vec2<f32>(table[at.y], table[at.y + 1u]);
    let a = x2[at.x];
    let b = x2[at.x + p.half];
    x2[at.x] = a * cs.x - b * cs.y;
    x2[at.x + p.half] = b * cs.x + a * cs.y;
  }
#endif
}

// Element index of rotation i's first value (x) and of its (cos, sin) in the table (y), for a tensor of `heads`
// heads whose rotated rows start at element `off`, `stride` apart.
fn site(i: u32, heads: u32, off: u32, stride: u32) -> vec2<u32> {
  let j = i % p.half;
  let rh = i / p.half;
  let h = rh % heads;
  let r = rh / heads;
  return vec2<u32>(off + r * stride + h * p.head_dim + j, ((p.table_row + r) * p.half + j) * 2u);
}
