// Pieces shared by the kernels that reduce over a workgroup (norm, reduce, matmul's gemv_coop), in two forms picked
// by the launcher: plain (workgroup memory and barriers only) and, with the SUBGROUPS define (set by
// GpuContext.kernel when KernelSpec.subgroups is on, with `enable subgroups;` prepended), subgroup operations
// combined through workgroup memory. The kernel file declares WG (threads per workgroup); the launcher prepends
// this file. The vec4 sums (workgroup_sum4, workgroup_sum4x2) exist in the subgroup form only: gemv_coop's plain
// form keeps its own tree, which reduces both of the GATED form's accumulators in the same log2(WG) steps.
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

// Sums of one or two vec4 per invocation (gemv_coop: four output columns, GATED also the up projection's four), with
// one barrier in either case: each vec4 goes through a subgroupAdd into its own set of WG / 4 slots, then every
// subgroup adds each set's slots as workgroup_sum does. One call per kernel invocation: the sets are fixed, so a
// second call could overwrite slots a slower subgroup still reads (workgroup_sum alternates its sets for that).
var<workgroup> sg_partial4: array<vec4<f32>, WG / 2u>;

// The subgroup's sum of `v` into slot ids.sg of slot set `slots` (0 or 1).
fn subgroup_slot4(v: vec4<f32>, slots: u32, ids: Invocation) {
  let s = subgroupAdd(v);
  if (subgroupElect()) {
    sg_partial4[slots * (WG / 4u) + ids.sg] = s;
  }
}

// The total of slot set `slots`, in every invocation; after the barrier that follows the subgroup_slot4 calls.
fn slots_total4(slots: u32, ids: Invocation) -> vec4<f32> {
  var acc = vec4<f32>();
  for (var k = ids.lane; k < ids.sgs; k += ids.lanes) {
    acc += sg_partial4[slots * (WG / 4u) + k];
  }
  return subgroupAdd(acc);
}

fn workgroup_sum4(v: vec4<f32>, ids: Invocation) -> vec4<f32> {
  subgroup_slot4(v, 0u, ids);
  workgroupBarrier();
  return slots_total4(0u, ids);
}

fn workgroup_sum4x2(a: vec4<f32>, b: vec4<f32>, ids: Invocation) -> array<vec4<f32>, 2> {
  subgroup_slot4(a, 0u, ids);
  subgroup_slot4(b, 1u, ids);
  workgroupBarrier();
  return array<vec4<f32>, 2>(slots_total4(0u, ids), slots_total4(1u, ids));
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
