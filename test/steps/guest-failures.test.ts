import { execFileSync } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { sha256File } from '../../src/sys/hash.js';
import { TaskLog } from '../../src/sys/task-log.js';
import { driver } from '../../src/steps/nvidia/driver.js';
import { installerModules } from '../../src/steps/nvidia/installer-modules.js';
import { toolkit } from '../../src/steps/nvidia/toolkit.js';
import type { StepContext } from '../../src/model/step.js';
import { buildDriverRun, buildNvidiaRun, moduleImports, NVIDIA_VERSION, nvidiaModuleSourceRelease, openKernelResizePatch, type DriverRun } from '../fixtures/driver.js';
import { DEBIAN_TARBALL, debianKernelVersion, startKernelOrg, type KernelOrg } from '../fixtures/kernel-org.js';
import { buildToolkitDebs } from '../fixtures/toolkit.js';
import { startAptRepo } from '../fixtures/apt-repo.js';
import { cliBin, repoRoot, run, sharedCacheDir, suiteDir, testDir, writeAptPipeline, writePipeline, leakedMounts } from '../helpers.js';

/** A step context for calling a step directly, with hand-made (partial) upstream results. */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
function stepContext(dir: string, over: Partial<StepContext<any, any>>): StepContext<any, any> {
  const log = new TaskLog(join(dir, 'task.log'));
  return {
    task: { id: 't', kind: 'x', upstream: {}, params: {}, files: {}, title: 't' },
    key: 'f'.repeat(64),
    params: {},
    files: {},
    locations: {},
    outDir: join(dir, 'out'),
    workDir: join(dir, 'work'),
    upstream: {},
    log,
    signal: new AbortController().signal,
    progress: () => undefined,
    earlier: async () => [],
    cacheDir: join(dir, 'cache'),
    sourceDate: 1704067200,
    network: true,
    ...over,
  };
}

const debsUpstream = (packages: string[]) => ({ dir: '/nonexistent', result: { kernelRelease: '6.1.1-nvidia-gpu', packages: packages.map((p) => ({ file: `${p}.deb`, package: p })) } });
let good: DriverRun;
let patch: string;
let fixtures: string;
/** The real driver (NVIDIA's 535.261.03 sources), open modules patched for 6.1.192: what guest.test.ts builds too. */
const goodDriver = () => ['--set', `driver.path=${good.file}`, '--set', `driver.sha256=${good.sha256}`, '--set', `driver.version=${NVIDIA_VERSION}`, '--set', `driver.patches=[${patch}]`];

beforeAll(() => {
  fixtures = suiteDir('gpu-guest-fixtures-');
  good = buildNvidiaRun(sharedCacheDir(), fixtures);
  patch = openKernelResizePatch(sharedCacheDir(), fixtures);
}, 600_000);

describe('driver tasks and toolkit refuse bad inputs before touching a rootfs', () => {
  const headers = debsUpstream(['linux-image-6.1.1-nvidia-gpu', 'linux-headers-6.1.1-nvidia-gpu']);
  const params = { version: NVIDIA_VERSION, url: null, moduleType: 'open', installerArgs: [] };

  it('rejects a driver whose sha256 does not match the pin', async () => {
    const dir = testDir();
    const ctx = stepContext(dir, { params: { ...params, sha256: 'a'.repeat(64) }, locations: { run: good.file }, upstream: { packages: headers } });
    await expect(installerModules.run(ctx)).rejects.toMatchObject({ code: 'E_CHECKSUM_MISMATCH', message: expect.stringContaining(`sha256 is ${good.sha256}, the pipeline pins ${'a'.repeat(64)}`) });
  });

  it('rejects a file that is not a makeself archive', async () => {
    const dir = testDir();
    const fake = join(dir, `NVIDIA-Linux-x86_64-${NVIDIA_VERSION}.run`);
    writeFileSync(fake, '#!/bin/sh\necho I am not an installer\n');
    const ctx = stepContext(dir, { params: { ...params, sha256: await sha256File(fake) }, locations: { run: fake }, upstream: { packages: headers } });
    await expect(installerModules.run(ctx)).rejects.toMatchObject({ code: 'E_NOT_MAKESELF', message: expect.stringContaining('is not a self-extracting NVIDIA .run archive') });
  });

  it('rejects a damaged archive whose --check fails', async () => {
    const dir = testDir();
    const damaged = join(dir, `NVIDIA-Linux-x86_64-${NVIDIA_VERSION}.run`);
    const bytes = readFileSync(good.file);
    bytes[bytes.length - 100] ^= 0xff;
    writeFileSync(damaged, bytes);
    const sha = createHash('sha256').update(bytes).digest('hex');
    const ctx = stepContext(dir, { params: { ...params, sha256: sha }, locations: { run: damaged }, upstream: { packages: headers } });
    await expect(installerModules.run(ctx)).rejects.toMatchObject({ code: 'E_ARCHIVE_CORRUPT' });
  });

  it('fails when kernel-debs made no linux-headers package', async () => {
    const dir = testDir();
    const ctx = stepContext(dir, { params: { ...params, sha256: good.sha256 }, locations: { run: good.file }, upstream: { packages: debsUpstream(['linux-image-6.1.1-nvidia-gpu']) } });
    await expect(installerModules.run(ctx)).rejects.toMatchObject({ code: 'E_HEADERS_MISSING', message: expect.stringContaining('no linux-headers-6.1.1-nvidia-gpu package') });
  });

  it('refuses a .run whose .manifest names another version than driver.version, before the rootfs', async () => {
    const dir = testDir();
    const other = buildDriverRun(dir, NVIDIA_VERSION, { manifestVersion: '535.230.02' });
    const ctx = stepContext(dir, { params: { ...params, sha256: other.sha256 }, locations: { run: other.file }, upstream: { packages: headers } });
    await expect(installerModules.run(ctx)).rejects.toMatchObject({ code: 'E_VERSION_MISMATCH', message: `driver NVIDIA-Linux-x86_64-${NVIDIA_VERSION}.run holds driver 535.230.02 (its .manifest), but driver.version says ${NVIDIA_VERSION}: make them the same` });
  });

  it('refuses a .run without .manifest: nvidia-installer could not install from it', async () => {
    const dir = testDir();
    const bare = buildDriverRun(dir, NVIDIA_VERSION, { manifestVersion: null });
    const ctx = stepContext(dir, { params: { ...params, sha256: bare.sha256 }, locations: { run: bare.file }, upstream: { packages: headers } });
    await expect(installerModules.run(ctx)).rejects.toMatchObject({ code: 'E_NOT_MAKESELF', message: expect.stringContaining('has no .manifest: it is not an NVIDIA driver package') });
  });

  it('refuses, by name, a patch that does not apply, and changes nothing', async () => {
    const dir = testDir();
    const stale = join(dir, 'stale.patch');
    writeFileSync(stale, readFileSync(patch, 'utf8').replaceAll('requested_size', 'wanted_size'));
    const ctx = stepContext(dir, { params: { ...params, sha256: good.sha256 }, files: { patches: [patch, stale] }, locations: { run: good.file }, upstream: { packages: headers } });
    const err = await installerModules.run(ctx).catch((e) => e);
    expect(err.code).toBe('E_DRIVER_PATCH');
    expect(err.message).toMatch(new RegExp(`^driver\\.patches\\[1\\] stale\\.patch does not apply to NVIDIA-Linux-x86_64-${NVIDIA_VERSION.replace(/\./g, '\\.')}\\.run: .*FAILED`));
  });

  it("the driver task refuses kernel modules of another driver release, before the rootfs (user-mode and kernel parts talk only when they are one release)", async () => {
    const dir = testDir();
    const modules = { dir: '/nonexistent', result: { driverVersion: '535.230.02', kernelRelease: '6.1.1-nvidia-gpu', moduleType: 'open', from: 'installer', sourceFile: 'NVIDIA-Linux-x86_64-535.230.02.run', tree: 'modules', modules: ['kernel/drivers/video/nvidia.ko'] } };
    const ctx = stepContext(dir, { params: { ...params, sha256: good.sha256 }, locations: { run: good.file }, upstream: { packages: headers, modules } });
    await expect(driver.run(ctx)).rejects.toMatchObject({ code: 'E_VERSION_MISMATCH', message: `driver NVIDIA-Linux-x86_64-${NVIDIA_VERSION}.run has the user-mode driver ${NVIDIA_VERSION}, but the kernel modules built from NVIDIA-Linux-x86_64-535.230.02.run are 535.230.02 for 6.1.1-nvidia-gpu: use the .run of the modules' release` });
  });

  it('rejects toolkit packages whose versions disagree, listing each', async () => {
    const dir = testDir();
    const debs = buildToolkitDebs(dir, '1.17.3-1', { 'libnvidia-container1': '1.16.0-1' });
    const ctx = stepContext(dir, { params: { version: '1.17.3-1', mode: 'oci-hook', repository: null, purge: [], keepHeaders: false }, files: { debs: [debs], recipe: join(repoRoot, 'rootfs/debian') } });
    const err = await toolkit.run(ctx).catch((e) => e);
    expect(err.code).toBe('E_TOOLKIT_VERSION');
    expect(err.details).toContain('libnvidia-container1 1.16.0-1  <- differs (libnvidia-container1_1.16.0-1_amd64.deb)');
  });
});

describe('guest bad inputs through the CLI', () => {
  let server: KernelOrg;
  const version = debianKernelVersion();
  beforeAll(async () => {
    server = await startKernelOrg([{ path: `v6.x/linux-${version}.tar.xz`, file: DEBIAN_TARBALL }]);
  });
  afterAll(async () => server.close());
  const nvidia = (dir: string) => writePipeline(dir, 'nvidia', `  version: "6.1"\n  source:\n    mirrors: [${server.mirror}]\n`);
  const aptPipeline = (dir: string, driver: string) => writeAptPipeline(dir, `  version: "6.1"\n  source:\n    mirrors: [${server.mirror}]\n`, driver);
  const common = (dir: string) => ['--cache-dir', sharedCacheDir(), '--out-dir', join(dir, 'out')];

  it("shows the compiler's first error when NVIDIA's open modules do not build on 6.1.192 unpatched", async () => {
    const dir = testDir();
    const r = await run(cliBin, ['build', '--until', 'driver', '--pipeline', nvidia(dir), ...common(dir), '--set', `driver.path=${good.file}`, '--set', `driver.sha256=${good.sha256}`, '--set', `driver.version=${NVIDIA_VERSION}`]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^error: E_DRIVER_INSTALL: nvidia-installer failed to build the open modules of driver 535\.261\.03 for kernel 6\.1\.\d+-nvidia-gpu: \S*nvidia\/nv-pci\.c:\d+:\d+: error: too few arguments to function .pci_resize_resource./m);
    expect(r.stderr).toContain('--- tail of /var/log/nvidia-installer.log ---');
    expect(leakedMounts(sharedCacheDir())).toEqual([]);
  }, 1_800_000);

  it("builds NVIDIA's proprietary modules against the kernel, nvidia-uvm with device-memory migration", async () => {
    const dir = testDir();
    const r = await run(cliBin, ['build', '--until', 'driver', '--pipeline', nvidia(dir), ...common(dir), ...goodDriver(), '--set', 'driver.moduleType=proprietary']);
    expect(r.code, r.stderr).toBe(0);
    const manifest = JSON.parse(readFileSync(join(dir, 'out/nvidia-test/manifest.json'), 'utf8'));
    const result = manifest.tasks.find((t: { id: string }) => t.id === 'driver').result;
    expect(result).toMatchObject({ driverVersion: NVIDIA_VERSION, moduleType: 'proprietary' });
    expect(result.modules.map((m: string) => m.split('/').pop()).sort()).toEqual(['nvidia-drm.ko', 'nvidia-modeset.ko', 'nvidia-peermem.ko', 'nvidia-uvm.ko', 'nvidia.ko']);
    const entry = manifest.tasks.find((t: { id: string }) => t.id === 'driver');
    // HMM (UVM's notifier paths) is open-modules-only: NVIDIA's proprietary uvm_linux.h pins
    // UVM_IS_CONFIG_HMM() to 0. Its device-memory migration still needs the fragment's DEVICE_PRIVATE.
    expect(moduleImports(join(sharedCacheDir(), 'entries', entry.key, 'out/rootfs.tar'), result.kernelRelease, 'kernel/drivers/video/nvidia-uvm.ko', dir)).toMatch(/ U migrate_vma_setup$/m);
    expect(leakedMounts(sharedCacheDir())).toEqual([]);
  }, 1_800_000);

  // driver.source: source — the failures of the host-side module build, each before or at the compile
  const fromSource = (dir: string, extra: string[]) => ['build', '--until', 'driver-modules', '--pipeline', nvidia(dir), ...common(dir), '--set', `driver.path=${good.file}`, '--set', `driver.sha256=${good.sha256}`, '--set', `driver.version=${NVIDIA_VERSION}`, '--set', 'driver.source=source', ...extra];

  it("shows the compiler's first error when the .run's open tree does not build on the host against 6.1.192", async () => {
    const dir = testDir();
    const r = await run(cliBin, fromSource(dir, []));
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^error: E_DRIVER_INSTALL: the open kernel modules of driver 535\.261\.03 \(NVIDIA-Linux-x86_64-535\.261\.03\.run\) did not build for kernel 6\.1\.\d+-nvidia-gpu: \S*nvidia\/nv-pci\.c:\d+:\d+: error: too few arguments to function .pci_resize_resource./m);
    expect(leakedMounts(sharedCacheDir())).toEqual([]);
  }, 1_800_000);

  it("refuses a kernel without X86_PAT, which NVIDIA's build needs, once the .config is final and before compiling anything", async () => {
    const dir = testDir();
    const fragment = join(dir, 'no-pat.conf');
    writeFileSync(fragment, '# NVIDIA\'s nv-pat.c falls back to code for kernels before 5.x without PAT\nCONFIG_MTRR=y\n# CONFIG_X86_PAT is not set\n');
    const r = await run(cliBin, fromSource(dir, ['--set', `kernel.fragments=[${fragment}]`, '--set', 'driver.moduleType=proprietary']));
    expect(r.code, r.stderr).toBe(1);
    expect(r.stderr).toMatch(/^error: E_DRIVER_KERNEL: the kernel lacks an option the driver needs: CONFIG_X86_PAT is not set, but NVIDIA's nv-pat\.c does not compile without it \(implicit declaration of __flush_tlb\): no-pat\.conf:3 turns it off$/m);
    expect(r.stdout).toMatch(/ failed kernel-config in /);
    expect(r.stdout).not.toMatch(/ start {2}kernel-build/);
    // the same fragment on the intel pipeline, which has no NVIDIA driver, is no error at kernel-config
    const intel = await run(cliBin, ['build', '--until', 'kernel-config', '--pipeline', writePipeline(dir, 'intel', `  version: "6.1"\n  source:\n    mirrors: [${server.mirror}]\n`), ...common(dir), '--set', `kernel.fragments=[${fragment}]`]);
    expect(intel.code, intel.stderr).toBe(0);
  }, 600_000);

  it('refuses a module source of another driver version, by name, before compiling', async () => {
    const dir = testDir();
    const tree = join(dir, 'tree/nvidia-open-kernel');
    mkdirSync(join(tree, 'nvidia'), { recursive: true });
    writeFileSync(join(tree, 'Kbuild'), 'ccflags-y += -DNV_VERSION_STRING=\\"535.247.01\\"\n');
    writeFileSync(join(tree, 'nvidia/nv-kernel.o_binary'), '');
    const tarball = join(dir, 'nvidia-open-kernel-535.247.01.tar.xz');
    execFileSync('tar', ['-cJf', tarball, '-C', join(dir, 'tree'), 'nvidia-open-kernel']);
    const r = await run(cliBin, fromSource(dir, ['--set', `driver.moduleSource.path=${tarball}`, '--set', `driver.moduleSource.sha256=${await sha256File(tarball)}`]));
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^error: E_VERSION_MISMATCH: driver\.moduleSource nvidia-open-kernel-535\.247\.01\.tar\.xz holds the kernel modules of driver 535\.247\.01, but driver\.version says 535\.261\.03/m);
  }, 600_000);

  it("refuses the proprietary type for NVIDIA's source release, which holds the open modules only", async () => {
    const dir = testDir();
    const release = nvidiaModuleSourceRelease(sharedCacheDir());
    const r = await run(cliBin, fromSource(dir, ['--set', `driver.moduleSource.path=${release}`, '--set', `driver.moduleSource.sha256=${await sha256File(release)}`, '--set', 'driver.moduleType=proprietary']));
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^error: E_DRIVER_SOURCE: driver\.moduleSource NVIDIA-kernel-module-source-535\.261\.03\.tar\.xz is NVIDIA's kernel module source release, which holds the open modules only/m);
  }, 600_000);

  it("driver.source: apt from a named signed repository that lacks the pinned packages: apt's own line, nothing mounted", async () => {
    const dir = testDir();
    const repo = await startAptRepo(dir, buildToolkitDebs(dir, '1.17.3-1'));
    try {
      const file = aptPipeline(dir, `  version: "${NVIDIA_VERSION}"\n  source: apt\n  packages: [nvidia-open-kernel-dkms=${NVIDIA_VERSION}-1, nvidia-smi=${NVIDIA_VERSION}-1]\n  repository:\n    url: ${repo.url}\n    suite: stable\n    components: [main]\n    key: ${repo.keyring}\n`);
      const r = await run(cliBin, ['build', '--until', 'driver', '--pipeline', file, ...common(dir), '--set', `toolkit.debs=${join(dir, 'toolkit-debs')}`]);
      expect(r.code, r.stderr).toBe(1);
      expect(r.stderr).toMatch(/^error: E_DRIVER_INSTALL: apt-get could not install driver\.packages nvidia-open-kernel-dkms=535\.261\.03-1 nvidia-smi=535\.261\.03-1: Unable to locate package nvidia-open-kernel-dkms \(check the versions with apt-cache policy against the repository\)/m);
      expect(leakedMounts(sharedCacheDir())).toEqual([]);
    } finally {
      await repo.close();
    }
  }, 1_800_000);

  it("driver.source: apt: a DKMS build failure shows the compiler's line and DKMS's make.log (Debian's open modules on 6.1.192, unpatched)", async () => {
    const dir = testDir();
    const pins = ['nvidia-open-kernel-dkms', 'nvidia-smi', 'libnvidia-ml1', 'libcuda1', 'firmware-nvidia-gsp'].map((p) => `${p}=${NVIDIA_VERSION}-1`);
    const file = aptPipeline(dir, `  version: "${NVIDIA_VERSION}"\n  source: apt\n  moduleType: open\n  packages: [${pins.join(', ')}]\n`);
    const r = await run(cliBin, ['build', '--until', 'driver', '--pipeline', file, ...common(dir), '--set', `toolkit.debs=${buildToolkitDebs(dir, '1.17.3-1')}`]);
    expect(r.code, r.stderr).toBe(1);
    expect(r.stderr).toMatch(/^error: E_DRIVER_INSTALL: DKMS could not build nvidia-current-open 535\.261\.03 for kernel 6\.1\.\d+-nvidia-gpu: \S*nvidia\/nv-pci\.c:\d+:\d+: error: too few arguments to function .pci_resize_resource./m);
    expect(r.stderr).toMatch(/--- \/var\/lib\/dkms\/nvidia-current-open\/535\.261\.03\/build\/make\.log \(from line \d+\) ---/);
    expect(leakedMounts(sharedCacheDir())).toEqual([]);
  }, 1_800_000);

  it("driver.source: apt: a patch made for the .run's layout is refused by name against the DKMS source, before DKMS builds", async () => {
    const dir = testDir();
    const pins = ['nvidia-open-kernel-dkms', 'nvidia-smi'].map((p) => `${p}=${NVIDIA_VERSION}-1`);
    const file = aptPipeline(dir, `  version: "${NVIDIA_VERSION}"\n  source: apt\n  packages: [${pins.join(', ')}]\n  patches: [${patch}]\n`);
    const r = await run(cliBin, ['build', '--until', 'driver', '--pipeline', file, ...common(dir), '--set', `toolkit.debs=${buildToolkitDebs(dir, '1.17.3-1')}`]);
    expect(r.code, r.stderr).toBe(2);
    expect(r.stderr).toMatch(/^error: E_DRIVER_PATCH: driver\.patches\[0\] \S+ does not apply to nvidia-current-open-535\.261\.03 \(nvidia-open-kernel-dkms=535\.261\.03-1\): can't find file to patch/m);
    expect(r.stdout).not.toMatch(/dkms install/);
    expect(leakedMounts(sharedCacheDir())).toEqual([]);
  }, 1_800_000);

  it('installs the toolkit from a signed apt repository named in the pipeline', async () => {
    const dir = testDir();
    const repo = await startAptRepo(dir, buildToolkitDebs(dir, '1.17.3-1'));
    try {
      const extra = `  repository:\n    url: ${repo.url}\n    suite: stable\n    components: [main]\n    key: ${repo.keyring}\n`;
      const file = writePipeline(dir, 'nvidia', `  version: "6.1"\n  source:\n    mirrors: [${server.mirror}]\n`).replace(/$/, '');
      writeFileSync(file, readFileSync(file, 'utf8').replace('toolkit:\n  version: "1.17.3-1"\n', `toolkit:\n  version: "1.17.3-1"\n${extra}`));
      const r = await run(cliBin, ['build', '--until', 'toolkit', '--pipeline', file, ...common(dir), ...goodDriver()]);
      expect(r.code, r.stderr).toBe(0);
      const manifest = JSON.parse(readFileSync(join(dir, 'out/nvidia-test/manifest.json'), 'utf8'));
      const installed = ['libnvidia-container-tools=1.17.3-1', 'libnvidia-container1=1.17.3-1', 'nvidia-container-toolkit-base=1.17.3-1', 'nvidia-container-toolkit=1.17.3-1'];
      expect(manifest.tasks.find((t: { id: string }) => t.id === 'toolkit').result.packages).toEqual(installed);
      expect(leakedMounts(sharedCacheDir())).toEqual([]);

      // locked: what apt adds to the locked base rootfs, each .deb by sha256 and with its repository
      const lockFile = join(dir, 'nvidia-test.lock.json');
      const locked = await run(cliBin, ['lock', '--pipeline', file, ...common(dir), ...goodDriver(), '--lock', lockFile]);
      expect(locked.code, locked.stderr).toBe(0);
      const params = JSON.parse(readFileSync(lockFile, 'utf8')).tasks.toolkit.resolved;
      expect(params.locked.packages.map((p: { name: string; version: string }) => `${p.name}=${p.version}`).sort()).toEqual(installed.sort());
      for (const p of params.locked.packages) expect(p).toMatchObject({ mirror: repo.url.replace(/\/$/, ''), sha256: createHash('sha256').update(readFileSync(join(dir, 'repo', p.filename))).digest('hex') });
      expect(params.locked.releases.map((r: { url: string }) => r.url)).toEqual([`${repo.url.replace(/\/$/, '')}/dists/stable/InRelease`, expect.stringMatching(/\/dists\/bookworm\/InRelease$/)]);
      const fetched = await run(cliBin, ['fetch', '--pipeline', file, ...common(dir), ...goodDriver(), '--lock', lockFile]);
      expect(fetched.code, fetched.stderr).toBe(0);
      await repo.close();
      // the locked step, with the repository gone and no network: the packages come from the cache's store
      const plan = JSON.parse((await run(cliBin, ['plan', '--json', '--pipeline', file, ...common(dir), ...goodDriver()])).stdout);
      const driverEntry = { dir: join(sharedCacheDir(), 'entries', plan.tasks.find((t: { id: string }) => t.id === 'driver').key, 'out'), result: manifest.tasks.find((t: { id: string }) => t.id === 'driver').result };
      const stepDir = testDir();
      const ctx = stepContext(stepDir, { params, files: { repositoryKey: repo.keyring, recipe: join(repoRoot, 'rootfs/debian') }, upstream: { driver: driverEntry }, cacheDir: sharedCacheDir(), network: false });
      mkdirSync(ctx.outDir, { recursive: true });
      mkdirSync(ctx.workDir, { recursive: true });
      const result = await toolkit.run(ctx);
      expect(result.packages).toEqual(installed);
      expect(readFileSync(join(stepDir, 'task.log'), 'utf8')).toContain('apt installs the toolkit from a local repository of the 4 locked packages');
      const listing = execFileSync('tar', ['-tf', join(ctx.outDir, 'rootfs.tar')], { encoding: 'utf8', maxBuffer: 1 << 26 });
      expect(listing).not.toMatch(/gpu-guest-locked|lists\/.*gpu-guest|var\/tmp\/gpu-guest/);
      expect(leakedMounts(sharedCacheDir())).toEqual([]);
    } finally {
      await repo.close().catch(() => undefined);
    }
  }, 1_800_000);

  it('refuses toolkit packages whose postinst does not create the hook binary (E_TOOLKIT_INSTALL)', async () => {
    const dir = testDir();
    const debs = buildToolkitDebs(dir, '1.17.3-1', {}, { brokenPostinst: true });
    const r = await run(cliBin, ['build', '--until', 'toolkit', '--pipeline', nvidia(dir), ...common(dir), ...goodDriver(), '--set', `toolkit.debs=[${debs}]`]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^error: E_TOOLKIT_INSTALL: nvidia-container-toolkit installed, but \/usr\/bin\/nvidia-container-toolkit is missing/m);
    expect(leakedMounts(sharedCacheDir())).toEqual([]);
  }, 1_800_000);

  it('says plainly when the mirror does not have the suite', async () => {
    const dir = testDir();
    const r = await run(cliBin, ['build', '--until', 'rootfs', '--pipeline', nvidia(dir), ...common(dir), '--set', 'rootfs.suite=nosuchsuite']);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/the mirror \S+ has no suite nosuchsuite \(check rootfs\.suite and rootfs\.mirror\)/);
    expect(leakedMounts(sharedCacheDir())).toEqual([]);
  });

  it('rejects an unknown distro at load time', async () => {
    const dir = testDir();
    const r = await run(cliBin, ['plan', '--pipeline', nvidia(dir), ...common(dir), '--set', 'rootfs.distro=fedora']);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/E_PIPELINE_INVALID: --set rootfs\.distro=fedora: rootfs\.distro: no recipe for 'fedora' \(known: debian, ubuntu/);
  });

  it('fails clearly when a fixed image size is too small', async () => {
    const dir = testDir();
    const file = writePipeline(dir, 'intel', '  version: "6.1"\n  source:\n    tarball: apt:linux-source-6.1\n');
    const r = await run(cliBin, ['build', '--until', 'image', '--pipeline', file, ...common(dir), '--set', 'image.sizeMiB=16'], {});
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/E_IMAGE_TOO_SMALL: image\.sizeMiB 16 is too small for the rootfs \(\d+ MiB of files need about \d+ MiB\)/);
  }, 600_000);
});
