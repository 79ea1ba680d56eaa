// Activation functions shared by the matmul epilogue and the gated-MLP kernel; `act` is chosen by one of the
// defines ACT_GELU, ACT_GELU_TANH, ACT_QUICK_GELU, ACT_SILU (identity when none is set).

fn sigmoid(x: f32) -> f32 {
  return 1.0 / (1.0 + exp(-x));
}

// erf by Abramowitz & Stegun 7.1.26 refined with one Newton step-free rational form: |error| < 1.5e-7,
// below f32 resolution of the GELU output. WGSL has no erf builtin.
fn erf_approx(x: f32) -> f32 {
  let s = sign(x);
  let a = abs(x);
  let t = 1.0 / (1.0 + 0.3275911 * a);
  let y = 1.0 - (((((1.061405429 * t - 1.453152027) * t) + 1.421413741) * t - 0.284496736) * t + 0.254829592) * t * exp(-a * a);
  return s * y;
}

// tanh written through exp with the argument clamped: some drivers return NaN from tanh for large |x|.
fn tanh_safe(x: f32) -> f32 {
  let c = clamp(x, -15.0, 15.0);
  let e = exp(2.0 * c);
  return (e - 1.0) / (e + 1.0);
}

fn act(x: f32) -> f32 {
#if ACT_GELU
  return 0.5 * x * (1.0 + erf_approx(x * 0.7071067811865476));
#elif ACT_GELU_TANH
  return 0.5 * x * (1.0 + tanh_safe(0.7978845608028654 * (x + 0.044715 * x * x * x)));
#elif ACT_QUICK_GELU
  return x * sigmoid(1.702 * x);
#elif ACT_SILU
  return x * sigmoid(x);
#else
  return x;
#endif
}
