// Rotary position embedding in place, Hugging Face rotate_half convention: for row r, head h and
// j < half = rotary_dim / 2, with (cos, sin) = table[r, j]:
//   a = x[j], b = x[j + half];  x[j] = a*cos - b*sin;  x[j + half] = b*cos + a*sin
// i.e. x * cos + rotate_half(x) * sin with cos/sin repeated over both halves. Only the first rotary_dim
// dims of each head turn (partial rotary); the rest stay. One invocation per (row, head, j); the launcher
// folds the workgroup count over x and y. The table holds any angle per (row, j), so 1-D, 2-D (vision) and
// multimodal (M-RoPE) position schemes are all a table built on the CPU.

struct Params {
  total: u32,      // rows * heads * half
  heads: u32,
  head_dim: u32,
  half: u32,       // rotary_dim / 2
  x_off: u32,      // element offset of the first rotated row's head 0
  x_stride: u32,   // elements between rows of x
  table_row: u32,  // table row used by the first rotated row
}

@group(0) @binding(0) var<uniform> p: Params;                     // sizes and views
@group(0) @binding(1) var<storage, read> table: array<f32>;       // [table rows, half, 2] (cos, sin)
@group(0) @binding(2) var<storage, read_write> x: array<f32>;     // [.., heads * head_dim] rotated in place

override WG: u32 = 256u;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) t: u32) {
  let i = (wg.y * nwg.x + wg.x) * WG + t;
  if (i >= p.total) {
    return;
  }
  let j = i % p.half;
  let rh = i / p.half;
  let h = rh % p.heads;
  let r = rh / p.heads;
  let tb = ((p.table_row + r) * p.half + j) * 2u;
  let c = table[tb];
  let s = table[tb + 1u];
  let base = p.x_off + r * p.x_stride + h * p.head_dim + j;
  let a = x[base];
  let b = x[base + p.half];
  x[base] = a * c - b * s;
  x[base + p.half] = b * c + a * s;
}
