#!/usr/bin/env bash
# The GPU checks, in one short run on a lent GPU machine (no registry, no Node there), from the repo root with the
# kit scripts/device-kit.sh packed here carried along (the device tool: carry [".device"], command
# `bash scripts/device-check.sh`, timeout_s about 400). Three steps, each capped so the whole stays under about
# six minutes and leaves device time to run it again:
# 1. the adapter: name, limits, features (adapter.txt);
# 2. the tests of the GPU paths (the variants planMatmul / planAttention pick on a GPU, subgroups at the GPU's
#    subgroup size, the norm folded into the GEMVs) and the goldens, which run every family through them
#    (tests.log; DEVICE_TESTS overrides the file list, DEVICE_TEST_S the cap, default 180 s: 151 s on SwiftShader here);
# 3. the kernel bench with wall-time ratios (bench.log, kernels.json; DEVICE_BENCH_S, default 150 s; BENCH_* as in
#    scripts/bench-kernels.ts, fewer repetitions and shorter measurements by default than on a CPU adapter).
# Results go to $OUT (the device tool's folder; /tmp/vlmscope-device-out elsewhere). Runs here too, on SwiftShader,
# which is how it is tested before a GPU is lent.
set -uo pipefail
cd "$(dirname "$0")/.."

KIT=.device
OUT=${OUT:-/tmp/vlmscope-device-out}
mkdir -p "$OUT"
[ -f "$KIT/node.xz" ] || { echo "device-check: no $KIT/node.xz: run ./scripts/device-kit.sh first and carry .device" >&2; exit 1; }
step() { echo "== $(date -u +%H:%M:%S) $*"; }

step "unpacking the kit"
node_dir=$(mktemp -d)
mkdir -p "$node_dir/bin"
xz -dc "$KIT/node.xz" >"$node_dir/bin/node" && chmod +x "$node_dir/bin/node"
export PATH="$node_dir/bin:$PATH"
[ -d node_modules ] || tar -xJf "$KIT/node_modules.tar.xz"
if ! ldconfig -p | grep -q 'libvulkan\.so\.1'; then
  for f in "$KIT"/*.deb; do [ -f "$f" ] && dpkg -x "$f" /; done
  ldconfig
fi
nvidia_icd=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
if [ -z "${VK_DRIVER_FILES:-}${VK_ICD_FILENAMES:-}" ] && [ -f "$nvidia_icd" ]; then export VK_DRIVER_FILES=$nvidia_icd; fi
# Dawn's binary wants a recent libstdc++; the kit's copy is used only when the machine's own does not load it.
if ! node -e "require('webgpu')" 2>/dev/null && [ -f "$KIT/lib/libstdc++.so.6.xz" ]; then
  mkdir -p "$node_dir/lib"
  xz -dc "$KIT/lib/libstdc++.so.6.xz" >"$node_dir/lib/libstdc++.so.6"
  export LD_LIBRARY_PATH="$node_dir/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  echo "device-check: Dawn did not load with this machine's libstdc++; using the kit's"
fi
node -e "require('webgpu')" || { echo "device-check: the webgpu package (Dawn) does not load here" >&2; exit 1; }
node scripts/build.mjs || { echo "device-check: the build failed" >&2; exit 1; }

step "adapter"
node --input-type=module -e "
  const { acquireGpu } = await import('./dist/index.js');
  const gpu = await acquireGpu();
  console.log('adapter:', gpu.adapterName);
  console.log('features:', [...gpu.features].sort().join(' ') || '(none requested)');
  console.log('wgsl features:', [...gpu.wgslFeatures].sort().join(' '));
  console.log('limits:', JSON.stringify(gpu.limits));
  gpu.destroy();
  process.exit(0);
" 2>&1 | tee "$OUT/adapter.txt"

step "tests of the GPU paths"
default_tests="tests/kernels-matmul.test.ts tests/matmul-variants.test.ts tests/matmul-gated.test.ts tests/matmul-norm.test.ts
  tests/matmul-split-out.test.ts tests/matmul-subgroups.test.ts tests/subgroups.test.ts tests/kernels-attention.test.ts
  tests/attention-split-kv.test.ts tests/attention-tiled.test.ts tests/kernels-norm.test.ts tests/kernels-rope.test.ts
  tests/kernels-embed.test.ts tests/kernels-reduce.test.ts tests/kernels-elementwise.test.ts tests/weights-stacked.test.ts
  tests/gpu-context.test.ts tests/gpu-timer.test.ts tests/llava-golden.test.ts tests/qwen-golden.test.ts tests/idefics3-golden.test.ts
  tests/llava-configs.test.ts tests/qwen-configs.test.ts tests/idefics3-configs.test.ts tests/patch-z.test.ts"
# shellcheck disable=SC2086 # the list splits on whitespace on purpose
NO_COLOR=1 VLMSCOPE_SKIP_BUILD=1 timeout "${DEVICE_TEST_S:-180}" node node_modules/vitest/vitest.mjs run ${DEVICE_TESTS:-$default_tests} \
  --reporter=verbose 2>&1 | tee "$OUT/tests.log" | grep -E 'Test Files|Tests  |FAIL|×' | head -80
echo "tests: exit ${PIPESTATUS[0]} (124: stopped at the cap)"

step "kernel bench"
BENCH_REPS=${BENCH_REPS:-3} BENCH_MIN_MS=${BENCH_MIN_MS:-40} BENCH_ATTENTION_REPS=${BENCH_ATTENTION_REPS:-5} \
  BENCH_NORM_REPS=${BENCH_NORM_REPS:-7} BENCH_MATMUL_SUBGROUPS_REPS=${BENCH_MATMUL_SUBGROUPS_REPS:-7} \
  BENCH_MATMUL_NORM_REPS=${BENCH_MATMUL_NORM_REPS:-7} BENCH_VARIANTS=${BENCH_VARIANTS:-1} \
  timeout "${DEVICE_BENCH_S:-150}" node "$KIT/bench-kernels.mjs" >"$OUT/bench.log" 2>&1
echo "bench: exit $? (124: stopped at the cap)"
tail -60 "$OUT/bench.log"
[ -f bench-results/kernels.json ] && cp bench-results/kernels.json "$OUT/kernels.json"
step "done: $(ls "$OUT" | tr '\n' ' ')"
