// Vision patch embedding helpers.
//   im2col:         out[n, v] = pixels[c, gy*P + py, gx*P + px]   n = gy*gw + gx, v = c*P*P + py*P + px
//                   so that conv2d(kernel = stride = P) == im2col · W[E, C*P*P]ᵀ (a matmul follows).
//   position_embed: with CLS (CLIP): out[0] = cls + pos[0], out[1 + n] = patches[n] + pos[1 + n];
//                   without (SigLIP): out[n] = patches[n] + pos[n].
// One invocation per output element; the launcher folds the workgroup count over x and y. load_cls / load_pos
// come from the launcher (dtype-specific).

struct Params {
  total: u32,     // output elements
  cols: u32,      // output row length: C*P*P (im2col) or E (position_embed)
  psize: u32,     // P (`patch` is a WGSL reserved word)
  width: u32,     // W (pixels per image row)
  plane: u32,     // H * W (pixels per channel)
  grid_w: u32,    // gw = W / P
}

@group(0) @binding(0) var<uniform> p: Params;                   // sizes
#if IM2COL
@group(0) @binding(1) var<storage, read> pixels: array<f32>;    // [C, H, W]
#else
@group(0) @binding(1) var<storage, read> patches: array<f32>;   // [Np, E] patch embeddings
#if HAS_CLS
@group(0) @binding(2) var<storage, read> cls: array<u32>;       // [E] class embedding, packed by dtype
#endif
@group(0) @binding(3) var<storage, read> pos: array<u32>;       // [Np + has_cls, E] positions, packed by dtype
#endif
@group(0) @binding(4) var<storage, read_write> o: array<f32>;   // output rows

override WG: u32 = 256u;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) t: u32) {
  let i = (wg.y * nwg.x + wg.x) * WG + t;
  if (i >= p.total) {
    return;
  }
  let n = i / p.cols;
  let v = i - n * p.cols;
#if IM2COL
  let pp = p.psize * p.psize;
  let c = v / pp;
  let rem = v - c * pp;
  let py = rem / p.psize;
  let px = rem - py * p.psize;
  let gy = n / p.grid_w;
  let gx = n - gy * p.grid_w;
  o[i] = pixels[c * p.plane + (gy * p.psize + py) * p.width + gx * p.psize + px];
#else
  var x: f32;
#if HAS_CLS
  if (n == 0u) {
    x = load_cls(v);
  } else {
    x = patches[i - p.cols];
  }
#else
  x = patches[i];
#endif
  o[i] = x + load_pos(i);
#endif
}
