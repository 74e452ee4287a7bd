import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildNvidiaRun, moduleImports, NVIDIA_VERSION, nvidiaModuleSourceRelease, openKernelResizePatch } from '../fixtures/driver.js';
import { DEBIAN_TARBALL, debianKernelVersion, startKernelOrg, type KernelOrg } from '../fixtures/kernel-org.js';
import { buildToolkitDebs } from '../fixtures/toolkit.js';
import { cliBin, leakedMounts, run, sharedCacheDir, suiteDir, writePipeline } from '../helpers.js';
import { sha256File } from '../../src/sys/hash.js';

const version = debianKernelVersion();
const release = `${version}-nvidia-gpu`;
const RELEASE_NAME = `NVIDIA-kernel-module-source-${NVIDIA_VERSION}.tar.xz`;
let server: KernelOrg;
let out: string;
let args: string[];
let plan: Awaited<ReturnType<typeof run>>;
let build: Awaited<ReturnType<typeof run>>;
let verify: Awaited<ReturnType<typeof run>>;

/**
 * NVIDIA's full kernel module source release (its whole core compiled from source, 325 s of the
 * suite's 2 cores) only on request: by default the .run's own open tree, with NVIDIA's prebuilt
 * core, as the issue that asked for the release allows when CI cannot afford it.
 */
const FULL_SOURCE = process.env.GPU_GUEST_TEST_FULL_SOURCE === '1';

// driver.source: source, as Kata's guest builder does it: the open modules compiled on the host
// against the shared kernel build's tree, patched for 6.1.192 — from the .run's kernel-open tree,
// or (GPU_GUEST_TEST_FULL_SOURCE=1) from NVIDIA's kernel module source release (the real 535.261.03
// tarball) fetched from a server laid out like NVIDIA's download folder; the .run adds firmware and
// the user-mode driver only. No compiler and no headers in the guest.
beforeAll(async () => {
  const dir = suiteDir('gpu-guest-source-');
  const releaseFile = FULL_SOURCE ? nvidiaModuleSourceRelease(sharedCacheDir()) : undefined;
  server = await startKernelOrg([{ path: `v6.x/linux-${version}.tar.xz`, file: DEBIAN_TARBALL }], {
    other: releaseFile ? [{ urlPath: `/XFree86/NVIDIA-kernel-module-source/${RELEASE_NAME}`, file: releaseFile }] : [],
  });
  out = join(dir, 'out');
  const driver = buildNvidiaRun(sharedCacheDir(), dir);
  const patch = openKernelResizePatch(sharedCacheDir(), dir);
  const debs = buildToolkitDebs(dir, '1.17.3-1');
  const release = releaseFile ? `  moduleSource:\n    mirrors: [${server.origin}/XFree86/NVIDIA-kernel-module-source]\n    sha256: ${await sha256File(releaseFile)}\n` : '';
  const file = writePipeline(dir, 'nvidia', `  version: "6.1"\n  source:\n    mirrors: [${server.mirror}]\n`);
  // the driver section of writePipeline, extended; the rootfs needs no compiler
  const text = readFileSync(file, 'utf8').replace(/^driver:\n/m, `driver:\n  source: source\n${release}`).replace('  extraPackages: [gcc, make, libelf1]\n', '  extraPackages: []\n');
  writeFileSync(file, text);
  args = ['--pipeline', file, '--cache-dir', sharedCacheDir(), '--out-dir', out, '--set', `driver.path=${driver.file}`, '--set', `driver.sha256=${driver.sha256}`, '--set', `driver.version=${NVIDIA_VERSION}`, '--set', `driver.patches=[${patch}]`, '--set', `toolkit.debs=${debs}`];
  plan = await run(cliBin, ['plan', '--json', ...args]);
  build = await run(cliBin, ['build', ...args]);
  verify = await run(cliBin, ['verify', ...args, '--hotplug', 'root-port']);
}, 2_400_000);
afterAll(async () => server?.close());

describe('driver.source: source (modules built on the host against the kernel tree)', () => {
  it('plans driver-modules on the kernel build alone, beside the rootfs', () => {
    expect(plan.code, plan.stderr).toBe(0);
    const tasks = JSON.parse(plan.stdout).tasks as { id: string; dependsOn?: string[]; upstream?: Record<string, string> }[];
    const modules = tasks.find((t) => t.id === 'driver-modules')!;
    expect(modules).toBeDefined();
    expect(JSON.stringify(modules)).toContain('kernel-build');
    expect(JSON.stringify(modules)).not.toContain('"rootfs"');
    expect(JSON.stringify(tasks.find((t) => t.id === 'driver'))).toContain('driver-modules');
  });

  it(`compiles the open modules${FULL_SOURCE ? " and NVIDIA's core from its downloaded release" : " from the .run's tree"}, nvidia-uvm with HMM, and leaves nothing mounted`, () => {
    expect(build.code, `${build.stdout}\n${build.stderr}`).toBe(0);
    expect(leakedMounts(sharedCacheDir())).toEqual([]);
    const manifest = JSON.parse(readFileSync(join(out, 'nvidia-test/manifest.json'), 'utf8'));
    const modules = manifest.tasks.find((t: { id: string }) => t.id === 'driver-modules').result;
    expect(modules).toMatchObject({ driverVersion: NVIDIA_VERSION, kernelRelease: release, moduleType: 'open', ...(FULL_SOURCE ? { from: 'release', sourceFile: RELEASE_NAME } : { from: 'run', sourceFile: `NVIDIA-Linux-x86_64-${NVIDIA_VERSION}.run` }) });
    const driver = manifest.tasks.find((t: { id: string }) => t.id === 'driver').result;
    expect(driver).toMatchObject({ driverVersion: NVIDIA_VERSION, kernelRelease: release, source: 'source' });
    expect(driver.modules.map((m: string) => m.split('/').pop()).sort()).toEqual(['nvidia-drm.ko', 'nvidia-modeset.ko', 'nvidia-peermem.ko', 'nvidia-uvm.ko', 'nvidia.ko']);
    const rootfs = join(out, 'nvidia-test/rootfs/kata-containers-nvidia-gpu.tar');
    expect(moduleImports(rootfs, release, 'kernel/drivers/video/nvidia-uvm.ko', join(out, '..'))).toMatch(/ U mmu_interval_notifier_insert$/m);
  });

  it('puts modules, firmware and the user-mode driver in the guest, but no compiler, headers or driver source', () => {
    const listing = execFileSync('tar', ['-tf', join(out, 'nvidia-test/rootfs/kata-containers-nvidia-gpu.tar')], { encoding: 'utf8', maxBuffer: 1 << 26 });
    expect(listing).toMatch(new RegExp(`^\\./usr/lib/modules/${release}/modules\\.dep$`, 'm'));
    expect(listing).toMatch(new RegExp(`^\\./usr/lib/firmware/nvidia/${NVIDIA_VERSION}/gsp_ga10x\\.bin$`, 'm'));
    expect(listing).toMatch(/^\.\/usr\/bin\/nvidia-smi$/m);
    expect(listing).not.toMatch(/^\.\/usr\/bin\/(gcc|cc|make)$/m);
    expect(listing).not.toMatch(/^\.\/usr\/src\/linux-headers-/m);
    expect(listing).not.toMatch(/\.run$|var\/tmp\/gpu-guest|\.manifest$|kernel-open|nv-kernel\.o/m);
  });

  it("boots in QEMU: nvidia loads up to 'No NVIDIA GPU found', nvidia-smi matches the modules", () => {
    expect(verify.code, `${verify.stdout}\n${verify.stderr}`).toBe(0);
    for (const check of [
      'pass  module-loads:nvidia  loadable: every symbol resolved, no NVIDIA GPU in this VM (No such device)',
      `pass  driver-version  nvidia ${NVIDIA_VERSION}`,
      'pass  gsp-firmware  gsp_ga10x.bin gsp_tu10x.bin',
      `pass  nvidia-smi  nvidia-smi ${NVIDIA_VERSION} runs, libnvidia-ml.so.${NVIDIA_VERSION}`,
    ]) {
      expect(verify.stdout).toContain(check);
    }
  });
});
