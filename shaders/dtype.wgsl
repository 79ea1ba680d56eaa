// Weight unpacking, prepended by the launchers to shaders that read weights. Weights stay in their stored
// dtype: f32 as raw bits, f16 / bf16 two per u32 (the even element in the low half, as little-endian bytes
// lay them out). `shader-f16` is not required: unpack2x16float is core WGSL.

fn unpack_f16(word: u32, odd: bool) -> f32 {
  let pair = unpack2x16float(word);
  return select(pair.x, pair.y, odd);
}

fn unpack_bf16(word: u32, odd: bool) -> f32 {
  // bf16 is the high half of an f32: shift it into place.
  return bitcast<f32>(select(word << 16u, word & 0xffff0000u, odd));
}

// Four 16-bit elements held in two words (a vec4 load's worth), in order.
fn unpack4_f16(q: vec2<u32>) -> vec4<f32> {
  return vec4<f32>(unpack2x16float(q.x), unpack2x16float(q.y));
}

fn unpack4_bf16(q: vec2<u32>) -> vec4<f32> {
  return vec4<f32>(bitcast<f32>(q.x << 16u), bitcast<f32>(q.x & 0xffff0000u), bitcast<f32>(q.y << 16u), bitcast<f32>(q.y & 0xffff0000u));
}
