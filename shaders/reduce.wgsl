// argmax over rows (one workgroup per row, WG threads striding over it, vocab sizes of 200k and more):
// out[out_index + r] = the lowest index of the largest value of row r. Values are compared as order-preserving
// u32 keys built from their bits, so the result is exact and well defined on every driver: NaN maps below
// -inf (never chosen over a number), -0 equals +0. (WGSL lets a compiler assume no NaN in float compares.)
// The threads' candidates are combined by a tree in workgroup memory (log2 WG barriers) or, in the subgroup form,
// by subgroup max/min and one slot per subgroup (one barrier); shaders/workgroup.wgsl (prepended) has Invocation.
// Both give the same index: the comparison is exact and the tie rule does not depend on the order.

struct Params {
  rows: u32,
  cols: u32,
  x_off: u32,      // element offset of row 0 of x
  x_stride: u32,   // elements between rows of x
  out_index: u32,  // element of out receiving row 0's index
}

@group(0) @binding(0) var<uniform> p: Params;                   // sizes and views
@group(0) @binding(1) var<storage, read> x: array<u32>;         // [rows, cols] f32 values, read as bits
@group(0) @binding(2) var<storage, read_write> out: array<u32>; // indices

const WG: u32 = 256u;

#if SUBGROUPS
var<workgroup> best_key: array<u32, WG / 4u>; // one slot per subgroup (subgroups have at least 4 invocations)
var<workgroup> best_idx: array<u32, WG / 4u>;
#else
var<workgroup> best_key: array<u32, WG>;
var<workgroup> best_idx: array<u32, WG>;
#endif

// Does candidate (ko, io) beat (km, im)? A larger key, or the same key at a lower index. Threads without elements
// carry index 0xffffffff and key 0: they lose every tie.
fn beats(ko: u32, io: u32, km: u32, im: u32) -> bool {
  return ko > km || (ko == km && io < im);
}

#if SUBGROUPS
// The best (key, index) over the subgroup's active invocations: the largest key, the lowest index holding it.
fn subgroup_best(k: u32, idx: u32) -> vec2<u32> {
  let km = subgroupMax(k);
  return vec2<u32>(km, subgroupMin(select(0xffffffffu, idx, k == km)));
}
#endif

// Monotonic map of f32 bits to u32: larger float -> larger key; NaN -> 0; -0 -> the key of +0.
fn order_key(bits: u32) -> u32 {
  let is_nan = (bits & 0x7f800000u) == 0x7f800000u && (bits & 0x007fffffu) != 0u;
  var b = bits;
  if (b == 0x80000000u) {
    b = 0u;
  }
  var key = b | 0x80000000u;
  if ((b & 0x80000000u) != 0u) {
    key = ~b;
  }
  return select(key, 0u, is_nan);
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, ids: Invocation) {
  let t = ids.t;
  let row = wg.y * nwg.x + wg.x;
  if (row >= p.rows) {
    return; // uniform per workgroup: safe before barriers
  }
  let base = p.x_off + row * p.x_stride;
  // Each thread scans its stride in ascending order and keeps the first maximum it meets.
  var k = 0u;
  var idx = 0xffffffffu;
  for (var c = t; c < p.cols; c += WG) {
    let kc = order_key(x[base + c]);
    if (idx == 0xffffffffu || kc > k) {
      k = kc;
      idx = c;
    }
  }
#if SUBGROUPS
  let mine = subgroup_best(k, idx);
  if (subgroupElect()) {
    best_key[ids.sg] = mine.x;
    best_idx[ids.sg] = mine.y;
  }
  workgroupBarrier();
  // Every subgroup folds the slots (lane j takes j, j + lanes, ...) and combines its lanes; thread 0 writes.
  var bk = 0u;
  var bi = 0xffffffffu;
  for (var s = ids.lane; s < ids.sgs; s += ids.lanes) {
    if (beats(best_key[s], best_idx[s], bk, bi)) {
      bk = best_key[s];
      bi = best_idx[s];
    }
  }
  let best = subgroup_best(bk, bi);
  if (t == 0u) {
    out[p.out_index + row] = best.y;
  }
#else
  best_key[t] = k;
  best_idx[t] = idx;
  workgroupBarrier();
  for (var s = WG / 2u; s > 0u; s >>= 1u) {
    if (t < s) {
      let ko = best_key[t + s];
      let io = best_idx[t + s];
      if (beats(ko, io, best_key[t], best_idx[t])) {
        best_key[t] = ko;
        best_idx[t] = io;
      }
    }
    workgroupBarrier();
  }
  if (t == 0u) {
    out[p.out_index + row] = best_idx[0];
  }
#endif
}
