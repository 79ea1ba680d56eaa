// Batched logistic-regression probes (src/interp/probe-cpu.ts has the maths and the float64 reference).
// x holds R rows of P probes x F features. A task is a list of examples (rows of x, each with a 0/1 label and a
// train / held-out flag) shared by all P probes; G tasks (in probing: functions x seeds) and P probes (heads) make
// G x P independent fits, one workgroup each (flat workgroup index = g P + q, folded over x and y). Entry points:
//   prepare  mean and std per (task, probe, feature) over the task's training rows: into out (reported) and
//            state (mean, 1/std, used to standardise x on the fly); weights and velocity zeroed
//   train    `iters` full-batch gradient steps with heavy-ball momentum, entirely on the GPU:
//              1. residual r_n = (sigmoid(w . x'_n + b) - y_n) / n_train on training rows (0 on held-out), one
//                 thread per example, into the fit's scratch row
//              2. gradient g_f = sum_n r_n x'_nf (+ l2 w_f), reduced over the examples: with F + 1 <= WG,
//                 S = WG / (F + 1) threads per feature each sum a slice (n = s, s + S, ...) and the slices are added
//                 in order; with more features, one thread per feature sums all examples
//              3. v <- momentum v + g; w <- w - lr v (bias = feature F, with x' = 1 and no penalty)
//   finish   weights, bias and correct-prediction counts (train, held-out) into out
// x' = (x - mean) * inv_std is recomputed at each read, so x stays shared by all tasks and is never written.
// Summation orders are fixed (no float atomics): a fit is deterministic on a given device.

struct Params {
  P: u32,          // probes
  F: u32,          // features per probe
  fits: u32,       // tasks x probes
  iters: u32,      // gradient steps in this dispatch
  lr: f32,
  momentum: f32,
  l2: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;           // [R, P, F] features
@group(0) @binding(2) var<storage, read> tasks: array<vec4<u32>>; // [G]: first example, examples, training rows, bits of 1 / training rows
@group(0) @binding(3) var<storage, read> ex: array<u32>;          // [examples of all tasks]: row << 2 | train << 1 | label
@group(0) @binding(4) var<storage, read_write> state: array<f32>; // [G, P, 4 F + 2]: w_0..w_{F-1}, b, velocity (F + 1), mean (F), 1/std (F)
@group(0) @binding(5) var<storage, read_write> resid: array<f32>; // [P x examples of all tasks] scratch residuals
@group(0) @binding(6) var<storage, read_write> out: array<f32>;   // [G, P, 3 F + 3]: w, b, train ok, test ok, mean, std

// Threads per workgroup, chosen by the launcher from the problem size.
#if WG64
const WG: u32 = 64u;
#elif WG128
const WG: u32 = 128u;
#else
const WG: u32 = 256u;
#endif

var<workgroup> part: array<f32, WG>;
var<workgroup> counts: array<atomic<u32>, 2>;

struct Fit {
  q: u32,      // probe
  first: u32,  // first example of the task in ex
  n: u32,      // examples
  inv_train: f32,
  sb: u32,     // state base
  rb: u32,     // resid base
  ob: u32,     // out base
}

fn fit_of(flat: u32) -> Fit {
  let g = flat / p.P;
  let q = flat % p.P;
  let t = tasks[g];
  var f: Fit;
  f.q = q;
  f.first = t.x;
  f.n = t.y;
  f.inv_train = bitcast<f32>(t.w);
  f.sb = flat * (4u * p.F + 2u);
  f.rb = t.x * p.P + q * t.y;
  f.ob = flat * (3u * p.F + 3u);
  return f;
}

/** Element index in x of feature 0 of example n of the fit. */
fn x_base(fit: Fit, n: u32) -> u32 {
  return ((ex[fit.first + n] >> 2u) * p.P + fit.q) * p.F;
}

/** Standardised feature f of the example whose features start at xb. */
fn xs(fit: Fit, xb: u32, f: u32) -> f32 {
  let mi = fit.sb + 2u * p.F + 2u + f;
  return (x[xb + f] - state[mi]) * state[mi + p.F];
}

/** w . x'_n + b, accumulated in feature order. */
fn logit(fit: Fit, n: u32) -> f32 {
  let xb = x_base(fit, n);
  var z = state[fit.sb + p.F];
  for (var f = 0u; f < p.F; f++) {
    z = fma(xs(fit, xb, f), state[fit.sb + f], z);
  }
  return z;
}

@compute @workgroup_size(WG)
fn prepare(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_index) t: u32) {
  let flat = wg.y * nwg.x + wg.x;
  if (flat >= p.fits) {
    return;
  }
  let fit = fit_of(flat);
  for (var f = t; f < p.F; f += WG) {
    var s = 0.0;
    for (var n = 0u; n < fit.n; n++) {
      if ((ex[fit.first + n] & 2u) != 0u) {
        s += x[x_base(fit, n) + f];
      }
    }
    let mean = s * fit.inv_train;
    var ss = 0.0;
    for (var n = 0u; n < fit.n; n++) {
      if ((ex[fit.first + n] & 2u) != 0u) {
        let d = x[x_base(fit, n) + f] - mean;
        ss = fma(d, d, ss);
      }
    }
    let sd = sqrt(ss * fit.inv_train);
    let keep = sd > 1e-6 * max(1.0, abs(mean));
    state[fit.sb + 2u * p.F + 2u + f] = mean;
    state[fit.sb + 3u * p.F + 2u + f] = select(0.0, 1.0 / sd, keep);
    out[fit.ob + p.F + 3u + f] = mean;
    out[fit.ob + 2u * p.F + 3u + f] = select(1.0, sd, keep);
  }
  for (var i = t; i < 2u * (p.F + 1u); i += WG) {
    state[fit.sb + i] = 0.0;
  }
}

fn update(fit: Fit, f: u32, g: f32) {
  let wi = fit.sb + f;
  let w = state[wi];
  var grad = g;
  if (f < p.F) {
    grad = fma(p.l2, w, g);
  }
  let vi = wi + p.F + 1u;
  let v = fma(p.momentum, state[vi], grad);
  state[vi] = v;
  state[wi] = w - p.lr * v;
}

@compute @workgroup_size(WG)
fn train(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
         @builtin(local_invocation_index) t: u32) {
  let flat = wg.y * nwg.x + wg.x;
  if (flat >= p.fits) {
    return; // uniform per workgroup: safe before barriers
  }
  let fit = fit_of(flat);
  let Fa = p.F + 1u;
  let S = max(1u, WG / Fa);
  for (var it = 0u; it < p.iters; it++) {
    for (var n = t; n < fit.n; n += WG) {
      let e = ex[fit.first + n];
      var r = 0.0;
      if ((e & 2u) != 0u) {
        let z = logit(fit, n);
        r = (1.0 / (1.0 + exp(-z)) - f32(e & 1u)) * fit.inv_train;
      }
      resid[fit.rb + n] = r;
    }
    storageBarrier();
    if (Fa <= WG) {
      var g = 0.0;
      if (t < S * Fa) {
        let f = t % Fa;
        let s = t / Fa;
        if (f < p.F) {
          for (var n = s; n < fit.n; n += S) {
            g = fma(resid[fit.rb + n], xs(fit, x_base(fit, n), f), g);
          }
        } else {
          for (var n = s; n < fit.n; n += S) {
            g += resid[fit.rb + n];
          }
        }
      }
      part[t] = g;
      workgroupBarrier();
      if (t < Fa) {
        var gs = 0.0;
        for (var s = 0u; s < S; s++) {
          gs += part[s * Fa + t];
        }
        update(fit, t, gs);
      }
    } else {
      // This phase reads only x, the residuals and each thread's own features' statistics, so a thread may
      // update its features at once.
      for (var f = t; f < Fa; f += WG) {
        var g = 0.0;
        if (f < p.F) {
          for (var n = 0u; n < fit.n; n++) {
            g = fma(resid[fit.rb + n], xs(fit, x_base(fit, n), f), g);
          }
        } else {
          for (var n = 0u; n < fit.n; n++) {
            g += resid[fit.rb + n];
          }
        }
        update(fit, f, g);
      }
    }
    storageBarrier();
  }
}

@compute @workgroup_size(WG)
fn finish(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_index) t: u32) {
  let flat = wg.y * nwg.x + wg.x;
  if (flat >= p.fits) {
    return;
  }
  let fit = fit_of(flat);
  if (t == 0u) {
    atomicStore(&counts[0], 0u);
    atomicStore(&counts[1], 0u);
  }
  workgroupBarrier();
  var ok_train = 0u;
  var ok_test = 0u;
  for (var n = t; n < fit.n; n += WG) {
    let e = ex[fit.first + n];
    let pred = select(0u, 1u, logit(fit, n) > 0.0);
    if (pred == (e & 1u)) {
      if ((e & 2u) != 0u) {
        ok_train++;
      } else {
        ok_test++;
      }
    }
  }
  atomicAdd(&counts[0], ok_train);
  atomicAdd(&counts[1], ok_test);
  workgroupBarrier();
  for (var f = t; f <= p.F; f += WG) {
    out[fit.ob + f] = state[fit.sb + f];
  }
  if (t == 0u) {
    out[fit.ob + p.F + 1u] = f32(atomicLoad(&counts[0]));
    out[fit.ob + p.F + 2u] = f32(atomicLoad(&counts[1]));
  }
}
