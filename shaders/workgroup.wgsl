// Pieces shared by the kernels that reduce over a workgroup (norm, reduce), in two forms picked by the launcher:
// plain (workgroup memory and barriers only) and, with the SUBGROUPS define (set by GpuContext.kernel when
// KernelSpec.subgroups is on, with `enable subgroups;` prepended), subgroup operations combined through
// workgroup memory. The kernel file declares WG (threads per workgroup); the launcher prepends this file.
//
// The subgroup size is not fixed: WebGPU allows 4..128 and lets it differ between pipelines, so everything here
// reads it from the subgroup_size builtin and sizes its slots for the smallest, 4 (at most WG / 4 subgroups). A
// subgroup may be partial (a workgroup of 64 on a device with 128 lanes): subgroup operations and subgroupElect
// see only the active invocations. Which invocations share a subgroup is not specified (there is no relation
// between local_invocation_index and subgroup_invocation_id), so subgroups are combined by subgroup_id, which
// also fixes the order of the sum: the result does not depend on timing.

// The invocation's ids, one entry-point parameter in both forms, so kernels call the helpers without #if.
#if SUBGROUPS
struct Invocation {
  @builtin(local_invocation_index) t: u32,
  @builtin(subgroup_invocation_id) lane: u32,
  @builtin(subgroup_size) lanes: u32,
  @builtin(subgroup_id) sg: u32,
  @builtin(num_subgroups) sgs: u32,
}
#else
struct Invocation {
  @builtin(local_invocation_index) t: u32,
}
#endif

// Threads per partial sum of the plain workgroup_sum (WG = PARTS * PARTS), set by the launchers that call it.
// Declared in both forms (the subgroup form ignores it), so a launcher's constants do not depend on the form.
override PARTS: u32 = 16u;

#if SUBGROUPS
// Two sets of WG / 4 slots, used by alternate calls: a call writes its slots right after its subgroupAdd, while a
// slower subgroup may still read the previous call's slots (there is no barrier after the read). The call before
// that used the same set but finished before the previous call's barrier, which every invocation passed.
var<workgroup> sg_partial: array<f32, WG / 2u>;
var<private> sum_set: u32;

// Sum of `v` over the workgroup with one barrier: a subgroupAdd, one slot per subgroup, then every subgroup adds
// the slots (lane k takes slots k, k + lanes, ...) and a second subgroupAdd, so every invocation gets the same
// total without a second barrier. Must be called in workgroup-uniform control flow.
fn workgroup_sum(v: f32, ids: Invocation) -> f32 {
  let s = subgroupAdd(v);
  let base = sum_set * (WG / 4u);
  sum_set ^= 1u;
  if (subgroupElect()) {
    sg_partial[base + ids.sg] = s;
  }
  workgroupBarrier();
  var acc = 0.0;
  for (var k = ids.lane; k < ids.sgs; k += ids.lanes) {
    acc += sg_partial[base + k];
  }
  return subgroupAdd(acc);
}
#else
var<workgroup> red: array<f32, WG>;
var<workgroup> partial: array<f32, PARTS>;

// Sum of `v` over the workgroup in two levels with two barriers (barriers, not arithmetic, dominate on CPU
// drivers): PARTS threads each add a column of PARTS values, then every thread adds the PARTS partial sums in
// the same order. Must be called in workgroup-uniform control flow.
fn workgroup_sum(v: f32, ids: Invocation) -> f32 {
  let t = ids.t;
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
#endif
