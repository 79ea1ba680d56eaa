// Token embedding gather with the LLaVA image-feature scatter:
//   out[r, :] = map[r] >= 0 ? data[map[r], :] : table[ids[ids_off + r], :]
// A table split in row blocks runs once per block (TABLE only: rows whose id lies in the block), then once
// with FEATURES only for the image rows.
// One invocation per output element; the launcher folds the workgroup count over x and y. Ids past the
// vocabulary and map entries past the data are clamped so nothing reads out of bounds (the model validates
// ids on the CPU first). load_table comes from the launcher (dtype-specific).

struct Params {
  total: u32,     // rows * cols
  cols: u32,      // embedding width D
  vocab: u32,     // table rows
  ids_off: u32,   // element offset of this call's first id
  data_rows: u32, // rows of data (FEATURES)
  o_off: u32,     // element offset of row 0 of out
  o_stride: u32,  // elements between rows of out
  id_base: u32,   // first vocabulary row held by this table block
  clamp_top: u32, // 1: ids past the block are clamped to its last row (the last block); 0: skipped
  t_skip: u32,    // table elements before the binding's start (the launcher binds only the rows of known ids)
}

@group(0) @binding(0) var<uniform> p: Params;                   // sizes and views
@group(0) @binding(1) var<storage, read> ids: array<u32>;       // token ids
#if TABLE
@group(0) @binding(2) var<storage, read> table: array<u32>;     // [vocab, D] embedding (block), packed by dtype
#endif
#if FEATURES
@group(0) @binding(3) var<storage, read> map: array<i32>;       // [rows] -1 = token embedding, k = data row k
@group(0) @binding(4) var<storage, read> data: array<f32>;      // [data_rows, D] image features
#endif
@group(0) @binding(5) var<storage, read_write> o: array<f32>;   // [rows, D] output

override WG: u32 = 256u;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) t: u32) {
  let i = (wg.y * nwg.x + wg.x) * WG + t;
  if (i >= p.total) {
    return;
  }
  let r = i / p.cols;
  let c = i - r * p.cols;
  let dst = p.o_off + r * p.o_stride + c;
#if FEATURES
  let k = map[r];
  if (k >= 0) {
    o[dst] = data[min(u32(k), p.data_rows - 1u) * p.cols + c];
    return;
  }
#endif
#if TABLE
  let id = ids[p.ids_off + r];
  if (id < p.id_base) {
    return;
  }
  var local = id - p.id_base;
  if (local >= p.vocab) {
    if (p.clamp_top == 0u) {
      return;
    }
    local = p.vocab - 1u;
  }
  o[dst] = load_table(local * p.cols + c - p.t_skip);
#endif
}
