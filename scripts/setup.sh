#!/usr/bin/env bash
# One-time set-up on a fresh Debian/Ubuntu machine: the SwiftShader Vulkan driver (from Debian's chromium
# package) for machines without a GPU, the Vulkan loader, and the npm dependencies; then the build.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! [ -f /usr/lib/chromium/vk_swiftshader_icd.json ] || ! ldconfig -p | grep -q libvulkan.so.1; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends chromium libvulkan1 >/dev/null
fi
npm ci --no-audit --no-fund
npm run build
