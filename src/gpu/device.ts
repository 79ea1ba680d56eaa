// Device acquisition: Node (Dawn through the `webgpu` package) and the browser (navigator.gpu) end in the
// same `Gpu` object; everything above this file is platform-free.

export interface GpuLimits {
  maxBufferSize: number;
  maxStorageBufferBindingSize: number;
  maxComputeWorkgroupsPerDimension: number;
  maxComputeWorkgroupStorageSize: number;
  maxComputeInvocationsPerWorkgroup: number;
  maxStorageBuffersPerShaderStage: number;
  minUniformBufferOffsetAlignment: number;
  minStorageBufferOffsetAlignment: number;
}

export interface Gpu {
  device: GPUDevice;
  limits: GpuLimits;
  /** Human-readable adapter description (vendor / architecture / driver when the adapter tells). */
  adapterName: string;
  /** Set when the device was lost; kernels refuse to run after that. */
  lost: string | null;
  destroy(): void;
}

export interface AcquireOptions {
  /** Force the SwiftShader Vulkan ICD (Node only). Default: used when no other Vulkan driver is installed. */
  swiftshader?: boolean;
  powerPreference?: GPUPowerPreference;
}

/** Error raised when no WebGPU adapter can be found; its message says what to install. */
export class NoGpuError extends Error {
  override name = 'NoGpuError';
}

const LIMIT_NAMES: (keyof GpuLimits)[] = [
  'maxBufferSize',
  'maxStorageBufferBindingSize',
  'maxComputeWorkgroupsPerDimension',
  'maxComputeWorkgroupStorageSize',
  'maxComputeInvocationsPerWorkgroup',
  'maxStorageBuffersPerShaderStage',
  'minUniformBufferOffsetAlignment',
  'minStorageBufferOffsetAlignment',
];

const isNode = typeof process !== 'undefined' && !!process.versions?.node;

export async function acquireGpu(options: AcquireOptions = {}): Promise<Gpu> {
  const powerPreference = options.powerPreference ?? 'high-performance';
  let adapter: GPUAdapter | null;
  if (!isNode && typeof navigator !== 'undefined' && navigator.gpu) {
    adapter = await navigator.gpu.requestAdapter({ powerPreference });
  } else if (isNode) {
    adapter = await nodeAdapter(options, powerPreference);
  } else {
    throw new NoGpuError(
      'WebGPU is not available in this browser: use a recent Chrome/Edge (or Chromium with --enable-unsafe-webgpu).',
    );
  }
  if (!adapter) {
    throw new NoGpuError(
      isNode
        ? 'no WebGPU adapter found. On a machine without a GPU install the SwiftShader Vulkan driver ' +
            "(Debian/Ubuntu: `apt-get install -y chromium libvulkan1`); vlmscope finds it by itself, or set " +
            'VK_ICD_FILENAMES to its vk_swiftshader_icd.json.'
        : 'the browser offers no WebGPU adapter (enable WebGPU, or start Chromium with --enable-unsafe-webgpu).',
    );
  }
  // Ask for the adapter's real limits: the defaults (256 MiB buffers, 128 MiB bindings, 8 storage buffers)
  // are far below what real models need.
  const requiredLimits: Record<string, number> = {};
  for (const name of LIMIT_NAMES) {
    if (name.startsWith('min')) continue;
    const v = (adapter.limits as unknown as Record<string, number>)[name];
    if (typeof v === 'number') requiredLimits[name] = v;
  }
  const device = await adapter.requestDevice({ requiredLimits });
  const limits = {} as GpuLimits;
  for (const name of LIMIT_NAMES) limits[name] = (device.limits as unknown as Record<string, number>)[name];
  const info = (adapter as GPUAdapter & { info?: GPUAdapterInfo }).info;
  const adapterName =
    [info?.vendor, info?.architecture, info?.device, info?.description].filter((s) => s).join(' ') || 'unknown adapter';
  const result: Gpu = {
    device,
    limits,
    adapterName,
    lost: null,
    destroy() {
      device.destroy();
    },
  };
  void device.lost.then((e) => {
    result.lost = e.message || e.reason || 'device lost';
  });
  return result;
}

const SWIFTSHADER_ICDS = [
  '/usr/lib/chromium/vk_swiftshader_icd.json',
  '/usr/lib/chromium-browser/vk_swiftshader_icd.json',
  '/opt/google/chrome/vk_swiftshader_icd.json',
];

/** Dawn instances created in this process; a collected instance takes its devices' event loop with it. */
const liveInstances: GPU[] = [];

/** Linux/WSL device nodes through which a Vulkan driver reaches real GPU hardware. */
function hasGpuDeviceNode(fs: typeof import('node:fs')): boolean {
  if (process.platform !== 'linux') return true;
  if (fs.existsSync('/dev/nvidia0') || fs.existsSync('/dev/dxg')) return true;
  try {
    return fs.readdirSync('/dev/dri').some((f) => f.startsWith('renderD'));
  } catch {
    return false;
  }
}

async function nodeAdapter(options: AcquireOptions, powerPreference: GPUPowerPreference): Promise<GPUAdapter | null> {
  const fs = await import('node:fs');
  const os = await import('node:os');
  // SwiftShader complains unless XDG_RUNTIME_DIR names a writable folder.
  const xdg = process.env.XDG_RUNTIME_DIR;
  if (!xdg || !fs.existsSync(xdg)) process.env.XDG_RUNTIME_DIR = os.tmpdir();

  let webgpu: typeof import('webgpu');
  try {
    webgpu = await import('webgpu');
  } catch (e) {
    throw new NoGpuError(`the 'webgpu' npm package (Dawn for Node) could not be loaded: ${(e as Error).message}`);
  }
  Object.assign(globalThis, webgpu.globals);

  const userChoseDriver = !!(process.env.VK_ICD_FILENAMES || process.env.VK_DRIVER_FILES);
  const swiftshader = SWIFTSHADER_ICDS.find((p) => fs.existsSync(p));
  const request = () => {
    // The Dawn instance must outlive its devices (its event loop resolves mapAsync): keep it referenced.
    const instance = webgpu.create([]);
    liveInstances.push(instance);
    return instance.requestAdapter({ powerPreference });
  };
  const useSwiftshader = () => {
    // The Vulkan loader reads this when Dawn creates its instance, so it is set before `create()`.
    process.env.VK_ICD_FILENAMES = swiftshader;
    return request();
  };
  if (userChoseDriver || !swiftshader) return request();
  // Without GPU device nodes there is no hardware to find: go straight to SwiftShader. (Trying the installed
  // Vulkan drivers first and then a second Dawn instance can crash Dawn; Mesa's lavapipe is rejected anyway.)
  if (options.swiftshader || !hasGpuDeviceNode(fs)) return useSwiftshader();
  const adapter = await request();
  if (adapter) return adapter;
  return useSwiftshader();
}
