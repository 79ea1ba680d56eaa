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
  /** Optional WebGPU features the device was created with ('subgroups' when offered; 'timestamp-query' when asked for). */
  features: ReadonlySet<string>;
  /** WGSL language extensions the WebGPU implementation offers (`wgslLanguageFeatures`), e.g. 'subgroup_id'. */
  wgslFeatures: ReadonlySet<string>;
  destroy(): void;
}

export interface AcquireOptions {
  /** Force the SwiftShader Vulkan ICD (Node only). Default: used when no other Vulkan driver is installed. */
  swiftshader?: boolean;
  powerPreference?: GPUPowerPreference;
  /**
   * Request the 'subgroups' feature when the adapter offers it, so kernels may use their subgroup forms (default:
   * yes, unless VLMSCOPE_NO_SUBGROUPS=1). Whether a context uses them is GpuContext's `subgroups`.
   */
  subgroups?: boolean;
  /**
   * Request 'timestamp-query' when the adapter offers it, for GpuTimer (GPU time of a step's compute passes; the
   * benchmarks use it). Default: no.
   */
  timestamps?: boolean;
}

/**
 * VLMSCOPE_NO_SUBGROUPS=1 turns subgroup use off for the process: devices are created without the feature and
 * contexts default to the plain kernels. (No `process` in a browser: never set there.)
 */
export function subgroupsOffByEnv(): boolean {
  return typeof process !== 'undefined' && process.env?.VLMSCOPE_NO_SUBGROUPS === '1';
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
  let gpuApi: GPU | null = null;
  if (!isNode && typeof navigator !== 'undefined' && navigator.gpu) {
    gpuApi = navigator.gpu;
    adapter = await navigator.gpu.requestAdapter({ powerPreference });
  } else if (isNode) {
    const found = await nodeAdapter(options, powerPreference);
    gpuApi = found.instance;
    adapter = found.adapter;
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
  // Subgroups (a row reduction in one subgroup operation instead of a workgroup-memory tree) are optional: asked
  // for only where the adapter offers them, so every adapter gets a device and the kernels keep their plain forms.
  const requiredFeatures: GPUFeatureName[] = [];
  if ((options.subgroups ?? !subgroupsOffByEnv()) && adapter.features.has('subgroups')) requiredFeatures.push('subgroups' as GPUFeatureName);
  if (options.timestamps && adapter.features.has('timestamp-query')) requiredFeatures.push('timestamp-query' as GPUFeatureName);
  const device = await adapter.requestDevice({ requiredLimits, requiredFeatures });
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
    features: new Set(device.features),
    wgslFeatures: new Set(gpuApi?.wgslLanguageFeatures ?? []),
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

/** The adapter and the Dawn instance it came from (which answers `wgslLanguageFeatures`). */
async function nodeAdapter(options: AcquireOptions, powerPreference: GPUPowerPreference): Promise<{ adapter: GPUAdapter | null; instance: GPU }> {
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
  const request = async () => {
    // The Dawn instance must outlive its devices (its event loop resolves mapAsync): keep it referenced.
    const instance = webgpu.create([]);
    liveInstances.push(instance);
    return { adapter: await instance.requestAdapter({ powerPreference }), instance };
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
  const found = await request();
  if (found.adapter) return found;
  return useSwiftshader();
}
