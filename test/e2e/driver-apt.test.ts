import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DEBIAN_REVISION, dkmsMarkerPatch, moduleImports, NVIDIA_VERSION } from '../fixtures/driver.js';
import { DEBIAN_TARBALL, debianKernelVersion, startKernelOrg, type KernelOrg } from '../fixtures/kernel-org.js';
import { TEST_SIGNER } from '../fixtures/signing.js';
import { buildToolkitDebs } from '../fixtures/toolkit.js';
import { cliBin, leakedMounts, run, runWithoutNetwork, sharedCacheDir, suiteDir, writeAptPipeline } from '../helpers.js';

const version = debianKernelVersion();
const release = `${version}-nvidia-gpu`;
const pinned = `${NVIDIA_VERSION}-${DEBIAN_REVISION}`;
// libcuda1: what CUDA containers get from the guest, and what makes Debian enable its modprobe configuration
const PACKAGES = ['nvidia-kernel-dkms', 'nvidia-smi', 'libnvidia-ml1', 'libcuda1', 'firmware-nvidia-gsp'].map((p) => `${p}=${pinned}`);
let server: KernelOrg;
let out: string;
let build: Awaited<ReturnType<typeof run>>;
let verify: Awaited<ReturnType<typeof run>>;
let listing: string;
let lock: Awaited<ReturnType<typeof run>>;
let fetched: Awaited<ReturnType<typeof run>>;
let lockFile: string;
let args: string[];
let bundle: string;

// driver.source: apt, the distribution's way: Debian's real NVIDIA packages (contrib/non-free of the
// host's mirror, signed by Debian's archive key), DKMS compiling NVIDIA's proprietary modules for
// the shared kernel build inside the chroot, then DKMS, the compiler and the headers purged. A patch
// in DKMS's layout (a modinfo field added to nvidia.ko) is applied to /usr/src before DKMS builds.
// Built the way an air-gapped site does: locked (apt's own choice of every package DKMS and the
// driver add, pinned by sha256), fetched into a bundle (the pipeline with its patch and toolkit
// debs, the kernel tarball, the locked packages), then built from the bundle alone in a network
// namespace with no route, so every package comes through a local repository of exactly the
// locked set; verify boots it by the same bundle (the unlocked apt path runs in
// test/steps/guest-failures.test.ts).
beforeAll(async () => {
  const dir = suiteDir('gpu-guest-apt-');
  server = await startKernelOrg([{ path: `v6.x/linux-${version}.tar.xz`, file: DEBIAN_TARBALL }]);
  out = join(dir, 'out');
  const debs = buildToolkitDebs(dir, '1.17.3-1');
  const patch = dkmsMarkerPatch(sharedCacheDir(), dir);
  const file = writeAptPipeline(dir, `  version: "6.1"\n  source:\n    mirrors: [${server.mirror}]\n`, `  version: "${NVIDIA_VERSION}"\n  source: apt\n  moduleType: proprietary\n  packages: [${PACKAGES.join(', ')}]\n  patches: [${patch}]\n`);
  args = ['--pipeline', file, '--cache-dir', sharedCacheDir(), '--out-dir', out, '--set', `toolkit.debs=${debs}`];
  lockFile = join(dir, 'nvidia-test.lock.json');
  lock = await run(cliBin, ['lock', ...args, '--lock', lockFile]);
  bundle = join(dir, 'nvidia-test.bundle.tar');
  fetched = lock.code === 0 ? await run(cliBin, ['fetch', ...args, '--lock', lockFile, '--bundle', bundle]) : lock;
  const fromBundle = ['--bundle', bundle, '--cache-dir', sharedCacheDir(), '--out-dir', out];
  build = fetched.code === 0 ? await runWithoutNetwork(['build', '--offline', ...fromBundle]) : fetched;
  verify = await run(cliBin, ['verify', ...fromBundle, '--hotplug', 'root-port']);
  listing = build.code === 0 ? execFileSync('tar', ['-tvf', join(out, 'nvidia-test/rootfs/kata-containers-nvidia-gpu.tar')], { encoding: 'utf8', maxBuffer: 1 << 26 }) : '';
}, 2_400_000);
afterAll(async () => server?.close());

describe('driver.source: apt (DKMS builds Debian’s NVIDIA packages in the chroot)', () => {
  it('locks what apt adds to the locked rootfs for the driver: the pins, DKMS, the compiler, each .deb by sha256 from the signed InRelease', () => {
    expect(lock.code, `${lock.stdout}\n${lock.stderr}`).toBe(0);
    expect(lock.stdout).toMatch(/^ {2}driver +\d+ packages pinned by sha256 \(InRelease [0-9a-f]{12}…\)$/m);
    const locked = JSON.parse(readFileSync(lockFile, 'utf8')).tasks.driver.resolved.locked;
    const rootfs = JSON.parse(readFileSync(lockFile, 'utf8')).tasks.rootfs.resolved.locked;
    const names = locked.packages.map((p: { name: string; version: string }) => `${p.name}=${p.version}`);
    expect(names).toEqual(expect.arrayContaining(PACKAGES));
    for (const name of ['dkms', 'make', 'libelf1', 'nvidia-kernel-support']) expect(names.some((n: string) => n.startsWith(`${name}=`))).toBe(true);
    expect(names.some((n: string) => /^gcc-\d+=/.test(n))).toBe(true);
    // apt adds only what the locked rootfs lacks
    const inRootfs = new Set(rootfs.packages.map((p: { name: string; version: string }) => `${p.name}=${p.version}`));
    expect(names.filter((n: string) => inRootfs.has(n))).toEqual([]);
    for (const p of locked.packages) {
      expect(p.sha256).toMatch(/^[0-9a-f]{64}$/);
      expect(p.filename).toMatch(/^pool\/(main|contrib|non-free|non-free-firmware)\//);
      expect(p.mirror).toBe(rootfs.packages[0].mirror ?? JSON.parse(readFileSync(lockFile, 'utf8')).tasks.rootfs.resolved.mirror);
    }
    expect(locked.releases).toEqual([rootfs.release]);
    expect(fetched.code, `${fetched.stdout}\n${fetched.stderr}`).toBe(0);
    expect(fetched.stdout).toMatch(new RegExp(`a Debian repository of ${rootfs.packages.length + locked.packages.length} locked package\\(s\\)`));
  });


  it('installs the pinned packages, applies the patch to the DKMS source, builds the modules for the guest kernel, and leaves nothing mounted', () => {
    expect(build.code, `${build.stdout}\n${build.stderr}`).toBe(0);
    expect(leakedMounts(sharedCacheDir())).toEqual([]);
    // installed offline from the local repository of the locked .debs, exactly the locked set
    // (the task's log as its cache entry keeps it: a warm cache runs nothing)
    const plan = JSON.parse(execFileSync(process.execPath, [cliBin, 'plan', '--json', '--bundle', bundle, '--cache-dir', sharedCacheDir()], { encoding: 'utf8', maxBuffer: 1 << 26 }));
    const key = plan.tasks.find((t: { id: string }) => t.id === 'driver').key;
    expect(readFileSync(join(sharedCacheDir(), 'entries', key, 'log.txt'), 'utf8')).toMatch(/apt installs the driver from a local repository of the \d+ locked packages$/m);
    const manifest = JSON.parse(readFileSync(join(out, 'nvidia-test/manifest.json'), 'utf8'));
    const driver = manifest.tasks.find((t: { id: string }) => t.id === 'driver');
    expect(driver.kind).toBe('driver-packages');
    expect(driver.result).toMatchObject({ driverVersion: NVIDIA_VERSION, kernelRelease: release, moduleType: 'proprietary', source: 'apt', packages: PACKAGES });
    // Debian renames the modules and loads them through modprobe install lines
    expect(driver.result.modules.sort()).toEqual(['nvidia-current-drm.ko', 'nvidia-current-modeset.ko', 'nvidia-current-peermem.ko', 'nvidia-current-uvm.ko', 'nvidia-current.ko'].map((m) => `updates/dkms/${m}`));
    expect(driver.result.loadNames).toMatchObject({ 'nvidia-current': 'nvidia', 'nvidia-current-uvm': 'nvidia-uvm' });
    expect(driver.result.purged).toEqual(expect.arrayContaining(['dkms', 'nvidia-kernel-dkms', `linux-headers-${release}`, 'make']));
    expect(driver.result.purged.some((p: string) => /^gcc(-\d+)?$/.test(p))).toBe(true);
    // the proprietary UVM with device-memory migration compiled in
    expect(moduleImports(join(out, 'nvidia-test/rootfs/kata-containers-nvidia-gpu.tar'), release, 'updates/dkms/nvidia-current-uvm.ko', join(out, '..'))).toMatch(/ U migrate_vma_setup$/m);
    // built from the patched /usr/src tree
    const ko = join(out, '..', 'nvidia-current.ko');
    writeFileSync(ko, execFileSync('tar', ['-xOf', join(out, 'nvidia-test/rootfs/kata-containers-nvidia-gpu.tar'), `./usr/lib/modules/${release}/updates/dkms/nvidia-current.ko`], { maxBuffer: 1 << 28 }));
    expect(execFileSync('modinfo', ['-F', 'gpu_guest_patch', ko], { encoding: 'utf8' }).trim()).toBe('applied');
  });

  it('keeps the modules, their modprobe configuration, firmware and the user-mode driver, but no DKMS, compiler, headers or driver source', () => {
    expect(listing).toMatch(new RegExp(`\\./usr/lib/modules/${release}/updates/dkms/nvidia-current\\.ko$`, 'm'));
    expect(listing).toMatch(/\.\/etc\/nvidia\/current\/nvidia-modprobe\.conf$/m);
    expect(listing).toMatch(/\.\/etc\/modprobe\.d\/nvidia\.conf -> /m);
    expect(listing).toMatch(new RegExp(`\\./usr/lib/firmware/nvidia/${NVIDIA_VERSION}/gsp_ga10x\\.bin$`, 'm'));
    expect(listing).toMatch(/\.\/usr\/bin\/nvidia-smi -> \/etc\/alternatives\/nvidia--nvidia-smi$/m);
    expect(listing).not.toMatch(/\.\/usr\/(s?bin\/(gcc|cc|make|dkms)|bin\/x86_64-linux-gnu-gcc-12)( -> .*)?$/m);
    expect(listing).not.toMatch(/\.\/usr\/src\/(linux-headers-|nvidia-current-)/m);
    expect(listing).not.toMatch(/\.\/var\/lib\/dkms\/nvidia/m);
    expect(listing).not.toMatch(/gpu-guest-driver|var\/tmp\/gpu-guest|framework\.conf\.d\/gpu-guest|var\/lib\/dkms\/mok|gpu-guest-locked|lists\/.*gpu-guest/m);
    // the runtime packages at their locked versions, as dpkg knows them in the guest
    const status = execFileSync('tar', ['-xOf', join(out, 'nvidia-test/rootfs/kata-containers-nvidia-gpu.tar'), './var/lib/dpkg/status'], { encoding: 'utf8', maxBuffer: 1 << 26 });
    for (const pin of ['nvidia-smi', 'libnvidia-ml1', 'libcuda1', 'firmware-nvidia-gsp']) expect(status).toMatch(new RegExp(`^Package: ${pin}\nStatus: install ok installed\n(?:.+\n)*?Version: ${pinned.replace(/[.+]/g, '\\$&')}$`, 'm'));
  });

  it("boots in QEMU: modprobe nvidia (Debian's install line) reaches 'No NVIDIA GPU found', nvidia-smi matches the modules", () => {
    expect(verify.code, `${verify.stdout}\n${verify.stderr}`).toBe(0);
    for (const check of [
      'pass  module-loads:nvidia  loadable: every symbol resolved, no NVIDIA GPU in this VM (No such device)',
      'pass  module-deps:nvidia-uvm',
      `pass  module-signer:nvidia  signer ${TEST_SIGNER}`,
      `pass  module-signature-trusted  the kernel trusts ${TEST_SIGNER}'s signatures`,
      `pass  driver-version  nvidia ${NVIDIA_VERSION}`,
      'pass  gsp-firmware  gsp_ga10x.bin gsp_tu10x.bin',
      `pass  nvidia-smi  nvidia-smi ${NVIDIA_VERSION} runs, libnvidia-ml.so.${NVIDIA_VERSION}`,
    ]) {
      expect(verify.stdout).toContain(check);
    }
  });
});
