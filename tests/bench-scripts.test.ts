// The bench's clock choice (scripts/bench-pair.ts benchClock) and the GPU-machine scripts (scripts/device-kit.sh,
// scripts/device-check.sh): what a session with a lent GPU runs without time to debug it there.

import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import type { GpuContext } from '../src/gpu/context.js';
import { benchClock } from '../scripts/bench-pair.js';
import { REPO_ROOT } from './helpers/fixtures.js';

/** The fields adapterProfile reads, for a made-up adapter. */
function fakeContext(adapterName: string, features: string[] = []): GpuContext {
  const limits = { maxComputeInvocationsPerWorkgroup: 1024, maxComputeWorkgroupStorageSize: 49152, maxComputeWorkgroupsPerDimension: 65535 };
  return { gpu: { adapterName, features: new Set(features) }, limits } as unknown as GpuContext;
}

describe('benchClock', () => {
  const saved = process.env.BENCH_CLOCK;
  afterEach(() => {
    if (saved === undefined) delete process.env.BENCH_CLOCK;
    else process.env.BENCH_CLOCK = saved;
  });

  it('divides CPU time on a CPU adapter, GPU time on a GPU with timestamps, wall time on one without', () => {
    delete process.env.BENCH_CLOCK;
    expect(benchClock(fakeContext('google swiftshader swiftshader-device-subzero', ['timestamp-query']))).toBe('cpu');
    expect(benchClock(fakeContext('mesa llvmpipe (LLVM 15)'))).toBe('cpu');
    expect(benchClock(fakeContext('nvidia hopper NVIDIA H100 80GB HBM3', ['timestamp-query']))).toBe('gpu');
    expect(benchClock(fakeContext('nvidia hopper NVIDIA H100 80GB HBM3'))).toBe('wall');
  });

  it('takes BENCH_CLOCK over the adapter, refuses gpu without timestamps, and names a value it does not know', () => {
    process.env.BENCH_CLOCK = 'wall';
    expect(benchClock(fakeContext('google swiftshader'))).toBe('wall');
    process.env.BENCH_CLOCK = 'cpu';
    expect(benchClock(fakeContext('nvidia hopper', ['timestamp-query']))).toBe('cpu');
    process.env.BENCH_CLOCK = 'gpu';
    expect(benchClock(fakeContext('google swiftshader', ['timestamp-query']))).toBe('gpu');
    expect(() => benchClock(fakeContext('nvidia hopper'))).toThrow(/BENCH_CLOCK=gpu: this device has no 'timestamp-query'/);
    process.env.BENCH_CLOCK = 'host';
    expect(() => benchClock(fakeContext('nvidia hopper'))).toThrow(/BENCH_CLOCK=host: expected cpu, wall or gpu/);
  });
});

describe('GPU-machine scripts', () => {
  const scripts = ['scripts/device-kit.sh', 'scripts/device-check.sh'];

  it.each(scripts)('%s parses (bash -n)', (script) => {
    expect(() => execFileSync('bash', ['-n', join(REPO_ROOT, script)], { stdio: 'pipe' })).not.toThrow();
  });

  it('device-check.sh names only test files that exist', () => {
    const text = readFileSync(join(REPO_ROOT, 'scripts/device-check.sh'), 'utf8');
    const list = text.match(/default_tests="([^"]+)"/);
    expect(list).not.toBeNull();
    const files = list![1].split(/\s+/).filter(Boolean);
    expect(files.length).toBeGreaterThan(10);
    for (const f of files) expect(existsSync(join(REPO_ROOT, f)), f).toBe(true);
  });

  it('the kit folder is ignored by git, so it travels only when carried', () => {
    expect(readFileSync(join(REPO_ROOT, '.gitignore'), 'utf8').split('\n')).toContain('.device/');
  });
});
