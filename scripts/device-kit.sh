#!/usr/bin/env bash
# Packs into .device/ (git-ignored) what a lent GPU machine needs to run scripts/device-check.sh: that machine has
# no package registry and no Node, and the device tool carries at most 64 MiB with the working tree. Run here,
# after ./scripts/setup.sh:
#   ./scripts/device-kit.sh
# then on the GPU machine (the device tool's `run`, carry [".device"]):
#   bash scripts/device-check.sh
#
# What goes in (xz-compressed where it pays):
# - node.xz: this machine's Node binary (an official, self-contained build: no libnode beside it);
# - node_modules.tar.xz: what the build and the tests need, without the bench-only tfjs (bundled below), the type
#   checker, Playwright and the other platforms' Dawn binaries;
# - bench-kernels.mjs: scripts/bench-kernels.ts bundled with tfjs inside (the `webgpu` package stays external);
# - libvulkan1 .deb: the Vulkan loader, which Dawn needs and the machine's image may lack (apt download, amd64);
# - lib/libstdc++.so.6: this machine's C++ runtime, for an image whose own is older than Dawn's build needs
#   (device-check.sh uses it only when loading Dawn fails without it).
set -euo pipefail
cd "$(dirname "$0")/.."

KIT=.device
LIMIT_MIB=${DEVICE_KIT_LIMIT_MIB:-60} # the tool's 64 MiB, less a margin for untracked files
rm -rf "$KIT"
mkdir -p "$KIT"

node_bin=$(command -v node)
if ldd "$node_bin" 2>/dev/null | grep -q 'libnode'; then
  echo "device-kit: $node_bin links libnode (a distribution build); install an official Node build first" >&2
  exit 1
fi
echo "device-kit: node $("$node_bin" --version) from $node_bin"
xz -6 -T0 -c "$node_bin" >"$KIT/node.xz"

[ -d node_modules ] || { echo "device-kit: no node_modules: run ./scripts/setup.sh first" >&2; exit 1; }
tar -c \
  --exclude='node_modules/@tensorflow' \
  --exclude='node_modules/typescript' \
  --exclude='node_modules/playwright-core' \
  --exclude='node_modules/webgpu/dist/darwin-*' \
  --exclude='node_modules/webgpu/dist/win32-*' \
  --exclude='node_modules/webgpu/dist/linux-arm64' \
  --exclude='node_modules/.cache' \
  node_modules | xz -6 -T0 >"$KIT/node_modules.tar.xz"

# tfjs is CommonJS and requires Node's builtins: the ESM bundle gets a `require` for them.
npx esbuild scripts/bench-kernels.ts --bundle --format=esm --platform=node --target=node20 --external:webgpu \
  --loader:.wgsl=text --log-level=warning --outfile="$KIT/bench-kernels.mjs" \
  --banner:js="import { createRequire } from 'node:module'; const require = createRequire(import.meta.url);"

libstdcxx=$(ldconfig -p | awk '/libstdc\+\+\.so\.6 .*x86-64/ {print $NF; exit}')
if [ -n "$libstdcxx" ]; then
  mkdir -p "$KIT/lib"
  xz -6 -c "$(readlink -f "$libstdcxx")" >"$KIT/lib/libstdc++.so.6.xz"
fi

# The Vulkan loader, downloaded for amd64 whatever this machine is (the device machines are x86-64).
apt_state=$(mktemp -d)
mkdir -p "$apt_state/partial"
apt_opts=(-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 "-oDir::State::Lists=$apt_state" -oAPT::Sandbox::User=root)
if apt-get "${apt_opts[@]}" update >/dev/null && (cd "$KIT" && apt-get "${apt_opts[@]}" download libvulkan1 >/dev/null); then
  echo "device-kit: $(cd "$KIT" && ls ./*.deb)"
else
  echo "device-kit: could not download libvulkan1; device-check.sh then needs the machine's own loader" >&2
fi
rm -rf "$apt_state"

# What travels: the kit, the tracked files and the untracked ones git does not ignore.
kit_bytes=$(du -sb "$KIT" | cut -f1)
tree_bytes=$( (git ls-files -z --cached --others --exclude-standard | xargs -0 stat -c %s 2>/dev/null || true) | awk '{s += $1} END {print s + 0}')
total_mib=$(( (kit_bytes + tree_bytes) / 1048576 ))
ls -l "$KIT"
echo "device-kit: kit $((kit_bytes / 1048576)) MiB + working tree $((tree_bytes / 1048576)) MiB = $total_mib MiB (limit $LIMIT_MIB)"
if [ "$total_mib" -gt "$LIMIT_MIB" ]; then
  echo "device-kit: over $LIMIT_MIB MiB: the device tool would refuse to carry it" >&2
  exit 1
fi
