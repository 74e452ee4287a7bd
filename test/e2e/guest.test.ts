import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildNvidiaRun, moduleImports, NVIDIA_VERSION, openKernelResizePatch } from '../fixtures/driver.js';
import { DEBIAN_TARBALL, debianKernelVersion, startKernelOrg, type KernelOrg } from '../fixtures/kernel-org.js';
import { testSigningKey, TEST_SIGNER } from '../fixtures/signing.js';
import { buildToolkitDebs } from '../fixtures/toolkit.js';
import { cliBin, run, sharedCacheDir, suiteDir, testDir, writePipeline, leakedMounts } from '../helpers.js';
import { spdxValidator } from '../fixtures/spdx.js';
import { guestChecks, hotplugChecks, parseChecks, verifyInit } from '../../src/cli/verify-init.js';
import { buildVerifyInitrd } from '../../src/cli/verify.js';
import { bootGuest, BRIDGE_PREF64_MIB, ROOT_PORT_PREF64_GIB } from '../../src/sys/qemu.js';
import { containerChecks } from '../../src/cli/verify-container.js';
import { prepareContainerShare, SHARE_TAG } from '../../src/cli/verify-share.js';

/** A module as it was before signing: the appended signature, its descriptor and the marker cut off. */
function stripSignature(ko: Buffer): Buffer {
  const marker = '~Module signature appended~\n';
  if (ko.subarray(-marker.length).toString() !== marker) throw new Error('the module carries no appended signature');
  // struct module_signature: 12 bytes, its last four the signature's length (big-endian)
  const sigLen = ko.readUInt32BE(ko.length - marker.length - 4);
  return ko.subarray(0, ko.length - marker.length - 12 - sigLen);
}

/**
 * Renames, in place, the first strong global symbol an ELF64 module imports (an undefined symbol
 * in .symtab, its name in .strtab) by changing its last letter: the module then asks the kernel
 * for a symbol nobody exports. Returns the new name.
 */
function renameImport(ko: Buffer): string {
  const shoff = Number(ko.readBigUInt64LE(0x28));
  const shentsize = ko.readUInt16LE(0x3a);
  const section = (i: number) => {
    const h = shoff + i * shentsize;
    return { type: ko.readUInt32LE(h + 4), offset: Number(ko.readBigUInt64LE(h + 0x18)), size: Number(ko.readBigUInt64LE(h + 0x20)), link: ko.readUInt32LE(h + 0x28) };
  };
  for (let i = 0; i < ko.readUInt16LE(0x3c); i++) {
    const symtab = section(i);
    if (symtab.type !== 2) continue;
    const strtab = section(symtab.link);
    for (let off = symtab.offset; off < symtab.offset + symtab.size; off += 24) {
      const nameAt = strtab.offset + ko.readUInt32LE(off);
      const global = ko[off + 4]! >> 4 === 1;
      if (!global || ko.readUInt16LE(off + 6) !== 0 || nameAt === strtab.offset) continue;
      const name = ko.toString('latin1', nameAt, ko.indexOf(0, nameAt));
      if (!/^[a-z][a-z0-9_]{5,}$/.test(name)) continue;
      const last = nameAt + name.length - 1;
      ko[last] = ko[last] === 0x71 ? 0x78 : 0x71;
      return ko.toString('latin1', nameAt, last + 1);
    }
  }
  throw new Error('the module imports no global symbol to rename');
}

const version = debianKernelVersion();
const release = `${version}-nvidia-gpu`;
let server: KernelOrg;
let out: string;
let args: string[];
let build: Awaited<ReturnType<typeof run>>;
let verify: Awaited<ReturnType<typeof run>>;

// The kernel comes from the shared cache (the same identity as the kernel path test's); the rootfs
// is Debian bookworm minbase from the host's mirror; the driver is a .run built from NVIDIA's real
// 535.261.03 sources (Debian's packages), its open modules patched for 6.1.192 and compiled against
// the built kernel; the toolkit debs are look-alikes.
beforeAll(async () => {
  server = await startKernelOrg([{ path: `v6.x/linux-${version}.tar.xz`, file: DEBIAN_TARBALL }]);
  const dir = suiteDir('gpu-guest-e2e-');
  out = join(dir, 'out');
  const driver = buildNvidiaRun(sharedCacheDir(), dir);
  const patch = openKernelResizePatch(sharedCacheDir(), dir);
  const debs = buildToolkitDebs(dir, '1.17.3-1');
  const file = writePipeline(dir, 'nvidia', `  version: "6.1"\n  source:\n    mirrors: [${server.mirror}]\n`);
  args = ['--pipeline', file, '--cache-dir', sharedCacheDir(), '--out-dir', out, '--set', `driver.path=${driver.file}`, '--set', `driver.sha256=${driver.sha256}`, '--set', `driver.version=${NVIDIA_VERSION}`, '--set', `driver.patches=[${patch}]`, '--set', `toolkit.debs=${debs}`];
  build = await run(cliBin, ['build', ...args]);
  verify = await run(cliBin, ['verify', ...args]);
}, 2_400_000);
afterAll(async () => server?.close());

describe('nvidia guest end to end (kernel → rootfs → driver → toolkit → image → boot)', () => {
  it('builds every task and leaves nothing mounted', () => {
    expect(build.code, `${build.stdout}\n${build.stderr}`).toBe(0);
    expect(leakedMounts(sharedCacheDir())).toEqual([]);
  });

  it('writes an SPDX 2.3 SBOM of exactly the packages installed in the guest, with the kernel and the driver, in SHA256SUMS', () => {
    const doc = JSON.parse(readFileSync(join(out, 'nvidia-test/sbom.spdx.json'), 'utf8'));
    expect(spdxValidator()(doc)).toEqual([]);
    // what dpkg itself says is installed in the rootfs the image was made from
    const dir = testDir();
    execFileSync('tar', ['-xf', join(out, 'nvidia-test/rootfs/kata-containers-nvidia-gpu.tar'), '-C', dir, './var/lib/dpkg']);
    const listed = execFileSync('dpkg-query', [`--admindir=${join(dir, 'var/lib/dpkg')}`, '-W', '-f', '${db:Status-Abbrev}${Package} ${Version}\\n'], { encoding: 'utf8' });
    const installed = listed.split('\n').filter((l) => l.startsWith('ii ')).map((l) => l.slice(3).trim()).sort();
    const debs = doc.packages.filter((p: { externalRefs?: unknown[] }) => p.externalRefs).map((p: { name: string; versionInfo: string }) => `${p.name} ${p.versionInfo}`).sort();
    expect(debs).toEqual(installed);
    expect(installed.length).toBeGreaterThan(100);
    expect(debs).toContain('nvidia-container-toolkit 1.17.3-1');
    expect(doc.packages.find((p: { name: string }) => p.name === 'nvidia-driver')).toMatchObject({ versionInfo: NVIDIA_VERSION, licenseDeclared: '(MIT OR GPL-2.0-only) AND LicenseRef-NVIDIA-Software-License' });
    expect(doc.packages.find((p: { name: string }) => p.name === 'linux')).toMatchObject({ versionInfo: release });
    // Debian's machine-readable copyright files give most packages their licence
    expect(doc.packages.find((p: { name: string }) => p.name === 'bash').licenseDeclared).toBe('GPL-3.0-or-later');
    expect(readFileSync(join(out, 'nvidia-test/SHA256SUMS'), 'utf8')).toMatch(/^[0-9a-f]{64} {2}sbom\.spdx\.json$/m);
  });

  it("builds NVIDIA's patched open modules against the headers deb, nvidia-uvm with MMU notifiers", () => {
    const manifest = JSON.parse(readFileSync(join(out, 'nvidia-test/manifest.json'), 'utf8'));
    const driver = manifest.tasks.find((t: { id: string }) => t.id === 'driver').result;
    expect(driver).toMatchObject({ driverVersion: NVIDIA_VERSION, kernelRelease: release, moduleType: 'open' });
    expect(driver.modules.map((m: string) => m.split('/').pop()).sort()).toEqual(['nvidia-drm.ko', 'nvidia-modeset.ko', 'nvidia-peermem.ko', 'nvidia-uvm.ko', 'nvidia.ko']);
    const rootfs = join(out, 'nvidia-test/rootfs/kata-containers-nvidia-gpu.tar');
    // NVIDIA's conftest compiles UVM's notifier (HMM) paths out when the kernel lacks MMU notifiers and HMM
    expect(moduleImports(rootfs, release, 'kernel/drivers/video/nvidia-uvm.ko', join(out, '..'))).toMatch(/ U mmu_interval_notifier_insert$/m);
    const listing = execFileSync('tar', ['-tf', rootfs], { encoding: 'utf8', maxBuffer: 1 << 26 });
    expect(listing).toMatch(new RegExp(`^\\./usr/lib/firmware/nvidia/${NVIDIA_VERSION}/gsp_ga10x\\.bin$`, 'm'));
    expect(listing).not.toMatch(/\.run$|var\/tmp\/gpu-guest|\.manifest$/m);
    // NVIDIA's prebuilt core carries debug info (nvidia.ko 173 MB unstripped): only what runs is kept
    const sizes = execFileSync('tar', ['-tvf', rootfs], { encoding: 'utf8', maxBuffer: 1 << 26 });
    const nvidiaKo = new RegExp(`^\\S+ \\S+ +(\\d+) .* \\./usr/lib/modules/${release}/kernel/drivers/video/nvidia\\.ko$`, 'm').exec(sizes);
    expect(Number(nvidiaKo?.[1])).toBeGreaterThan(1 << 20);
    expect(Number(nvidiaKo?.[1])).toBeLessThan(40 << 20);
    const toolkit = manifest.tasks.find((t: { id: string }) => t.id === 'toolkit').result;
    expect(toolkit.purged).toEqual(expect.arrayContaining(['gcc', 'make', `linux-headers-${release}`]));
    expect(toolkit.sizeAfterBytes).toBeLessThan(toolkit.sizeBeforeBytes);
    // nvidia-installer built them in the build root; the guest got them with its user-mode install
    expect(manifest.tasks.find((t: { id: string }) => t.id === 'driver-modules').result).toMatchObject({ from: 'installer', driverVersion: NVIDIA_VERSION, kernelRelease: release, modules: driver.modules });
  });

  it("a change to the guest's package list reruns the rootfs and the driver's install, never the module build", async () => {
    const plan = await run(cliBin, ['plan', '--json', ...args, '--set', 'rootfs.packages=[jq]']);
    expect(plan.code, plan.stderr).toBe(0);
    const status = Object.fromEntries((JSON.parse(plan.stdout) as { tasks: { id: string; status: string }[] }).tasks.map((t) => [t.id, t.status]));
    expect(status).toMatchObject({ 'kernel-build': 'cached', 'kernel-debs': 'cached', 'build-root': 'cached', 'driver-modules': 'cached', rootfs: 'run', driver: 'run', toolkit: 'run' });
  });

  it('makes an ext4 image with the hook, no host identity, and the Kata snippet', () => {
    const img = join(out, 'nvidia-test/rootfs/kata-containers-nvidia-gpu.img');
    expect(execFileSync('dumpe2fs', ['-h', img], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] })).toMatch(/Filesystem volume name:\s+gpu-guest/);
    const listing = execFileSync('tar', ['-tvf', join(out, 'nvidia-test/rootfs/kata-containers-nvidia-gpu.tar')], { encoding: 'utf8' });
    expect(listing).toMatch(/^-rwxr-xr-x 0\/0 .* \.\/usr\/share\/oci\/hooks\/prestart\/nvidia-container-toolkit\.sh$/m);
    expect(listing).not.toMatch(/\.\/etc\/(hostname|resolv\.conf)$/m);
    const kata = readFileSync(join(out, 'nvidia-test/kata/configuration-nvidia-gpu.toml'), 'utf8');
    for (const line of ['kernel = "/usr/share/kata-containers/vmlinuz-nvidia-gpu.container"', 'image = "/usr/share/kata-containers/kata-containers-nvidia-gpu.img"', 'machine_type = "q35"', 'hotplug_vfio_on_root_bus = true', 'pcie_root_port = 1', 'guest_hook_path = "/usr/share/oci/hooks"']) {
      expect(kata).toContain(line);
    }
  });

  it("boots in QEMU and knows a real driver: nvidia loads up to 'No NVIDIA GPU found', firmware, nvidia-smi", () => {
    expect(verify.code, `${verify.stdout}\n${verify.stderr}`).toBe(0);
    for (const check of [
      `pass  kernel-release  ${release}`,
      'pass  config:CONFIG_PCI_MMCONFIG  on',
      'pass  config:CONFIG_DRM_NOUVEAU  off',
      'pass  config:CONFIG_MMU_NOTIFIER  on',
      'pass  module-loads:nvidia  loadable: every symbol resolved, no NVIDIA GPU in this VM (No such device)',
      'pass  config:CONFIG_MODULE_SIG  on',
      `pass  module-signer:nvidia  signer ${TEST_SIGNER}`,
      `pass  module-signer:nvidia-uvm  signer ${TEST_SIGNER}`,
      `pass  module-signature-trusted  the kernel trusts ${TEST_SIGNER}'s signatures`,
      `pass  driver-version  nvidia ${NVIDIA_VERSION}`,
      'pass  gsp-firmware  gsp_ga10x.bin gsp_tu10x.bin',
      `pass  nvidia-smi  nvidia-smi ${NVIDIA_VERSION} runs, libnvidia-ml.so.${NVIDIA_VERSION}`,
      'pass  oci-hook',
    ]) {
      expect(verify.stdout).toContain(check);
    }
    expect(verify.stdout).toMatch(/pass {2}module-deps:nvidia-uvm {2}needs: \S+\/nvidia\.ko/);
    // a container the way Kata runs one: files over 9p, overlays, crun in every namespace, the guest hook
    for (const check of [
      'pass  share-9p  9p share gg-share mounted, marker read back',
      'pass  share-virtiofs  virtio-fs share gg-virtiofs mounted, marker read back',
      "pass  overlay-mount  the container's rootfs: the virtio-fs share under a tmpfs overlay; the runtime's root: the image under one",
      'pass  container-run  crun version 1.8.1 ran a container from the share (exit 0)',
      'pass  container-cgroup-limits  memory.max 67108864, pids.max 64, cpu.max 50000 100000',
      "pass  container-seccomp  Seccomp: 2 (2 = filter); mkdir: mkdir: can't create directory '/tmp/gg-dir': Host is down",
      'pass  oci-hook-chain  runtime -> /usr/share/oci/hooks/prestart/nvidia-container-toolkit.sh -> nvidia-container-toolkit -> nvidia-container-cli: initialization error: nvml error: driver not loaded (no NVIDIA GPU in this VM)',
    ]) {
      expect(verify.stdout).toContain(check);
    }
    expect(verify.stdout).toMatch(/^pass {2}erofs-mount {2}erofs layer mounted through \/dev\/loop\d+$/m);
    expect(verify.stdout).toMatch(/^pass {2}cgroup2 {2}cgroup2 controllers: .*\bmemory\b.*\bpids\b/m);
    expect(verify.stdout).toMatch(/^pass {2}container-namespaces {2}pid net ipc uts mnt cgroup user all new; pid 1, hostname gg-verify, uid 0 = 100000 outside, network devices: lo\b/m);
    expect(verify.stdout).toMatch(existsSync('/dev/vhost-vsock') ? /^pass {2}vsock {2}virtio vsock transport bound/m : /^skip {2}vsock {2}this host has no \/dev\/vhost-vsock/m);
    // Kata's GPU topology: a 16 GiB prefetchable BAR hot-plugged into the root port lands above 4 GiB, and goes away again
    expect(verify.stdout).toMatch(/^pass {2}pcie-hotplug {2}0000:\S+ BAR2 0x0*[1-9a-f][0-9a-f]{8}-0x[0-9a-f]+ \(16 GiB, prefetchable 1\)$/m);
    expect(verify.stdout).toMatch(/^pass {2}pcie-hot-unplug {2}0000:\S+ removed$/m);
    // and Kata's small-BAR topology, in a second boot: a 256 MiB BAR hot-plugged onto a PCI bridge by ACPI hotplug
    expect(verify.stdout).toContain('booting it again with a PCI bridge and ACPI hotplug');
    expect(verify.stdout).toMatch(/^pass {2}bridge-hotplug {2}0000:01:\S+ BAR2 0x[0-9a-f]+-0x[0-9a-f]+ \(256 MiB, prefetchable 1\)$/m);
    expect(verify.stdout).toMatch(/^pass {2}bridge-hot-unplug {2}0000:01:\S+ removed$/m);
    expect(existsSync(join(out, 'nvidia-test/logs/verify-bridge.log'))).toBe(true);
    expect(verify.stdout).toMatch(/pass {2}module-vermagic:nvidia {2}6\.1\.\d+-nvidia-gpu SMP/);
    expect(existsSync(join(out, 'nvidia-test/logs/verify.log'))).toBe(true);
  });

  it('fails the hotplug check when the BAR does not fit the root port\'s or the bridge\'s reserved window', async () => {
    const work = suiteDir('gpu-guest-hotplug-');
    // one boot of the hotplug checks alone, a device of barBytes hot-plugged into the topology's slot
    const plugTooLarge = async (slots: 'root-port' | 'bridge', barBytes: number) => {
      const dir = join(work, slots);
      const checks = hotplugChecks(slots, barBytes);
      const boot = await bootGuest({
        kernel: join(out, 'nvidia-test/kernel', `vmlinuz-${release}`),
        initrd: await buildVerifyInitrd(dir, verifyInit(checks, 'ext4'), new AbortController().signal),
        append: 'console=ttyS0 panic=-1 loglevel=4',
        accel: 'tcg',
        machine: 'q35',
        slots,
        memoryMiB: 512,
        timeoutMs: 300_000,
        logFile: join(dir, 'console.log'),
        doneMarker: /^GG-DONE/m,
        hotplug: { qmpSocket: join(dir, 'qmp.sock'), memPath: join(dir, 'bar.mem'), barBytes },
      });
      return parseChecks(boot.console, checks.map((c) => c.name)).find((c) => c.name === `${slots === 'bridge' ? 'bridge' : 'pcie'}-hotplug`);
    };
    expect(await plugTooLarge('root-port', 2 * ROOT_PORT_PREF64_GIB * 2 ** 30)).toMatchObject({ pass: false, detail: expect.stringMatching(/BAR2 was not assigned/) });
    // the same on the bridge of the small-BAR topology: a BAR twice its window gets no space
    expect(await plugTooLarge('bridge', 2 * BRIDGE_PREF64_MIB * 2 ** 20)).toMatchObject({ pass: false, detail: expect.stringMatching(/0000:01:00\.0: BAR2 was not assigned.*can't assign; no space/) });
  }, 400_000);

  it('fails the container checks when the runtime does not apply what they prove, or the hook does not reach the toolkit', async () => {
    // one boot of the container checks on the built guest: a bundle without user namespace, limits
    // and seccomp, and a "hook" that is no NVIDIA hook (true)
    const work = suiteDir('gpu-guest-containers-');
    const hook = { path: 'usr/bin/true' };
    const share = await prepareContainerShare(work, { hook }, new AbortController().signal);
    const spec = JSON.parse(readFileSync(join(share.dir, 'ctr/config.json'), 'utf8'));
    spec.linux.namespaces = spec.linux.namespaces.filter((n: { type: string }) => n.type !== 'user');
    delete spec.linux.uidMappings;
    delete spec.linux.gidMappings;
    delete spec.linux.seccomp;
    delete spec.linux.resources.memory;
    writeFileSync(join(share.dir, 'ctr/config.json'), JSON.stringify(spec));
    const checks = containerChecks({ marker: share.marker, hook });
    const boot = await bootGuest({
      kernel: join(out, 'nvidia-test/kernel', `vmlinuz-${release}`),
      initrd: await buildVerifyInitrd(work, verifyInit(checks, 'ext4'), new AbortController().signal),
      disk: join(out, 'nvidia-test/rootfs/kata-containers-nvidia-gpu.img'),
      append: 'console=ttyS0 panic=-1 loglevel=4',
      accel: 'tcg',
      machine: 'q35',
      memoryMiB: 512,
      timeoutMs: 300_000,
      logFile: join(work, 'console.log'),
      doneMarker: /^GG-DONE/m,
      share: { dir: share.dir, tag: SHARE_TAG },
    });
    const results = new Map(parseChecks(boot.console, checks.map((c) => c.name)).map((r) => [r.name, r]));
    expect(results.get('container-run')).toMatchObject({ pass: true });
    expect(results.get('container-namespaces')).toMatchObject({ pass: false, detail: expect.stringMatching(/^user namespace not new/) });
    expect(results.get('container-cgroup-limits')).toMatchObject({ pass: false, detail: 'memory.max max, pids.max 64, cpu.max 50000 100000' });
    expect(results.get('container-seccomp')).toMatchObject({ pass: false, detail: expect.stringMatching(/^Seccomp: 0 \(2 = filter\); mkdir:$/) });
    expect(results.get('oci-hook-chain')).toMatchObject({ pass: false, detail: expect.stringMatching(/^the prestart hook did not run nvidia-container-toolkit \(crun exit 0\)/) });
  }, 400_000);

  it("toolkit.mode cdi: the image's CDI unit runs in the guest and fails only for want of a driver", async () => {
    const cdiOut = join(suiteDir('gpu-guest-cdi-'), 'out');
    const cdiArgs = [...args.map((a) => (a === out ? cdiOut : a)), '--set', 'toolkit.mode=cdi'];
    const built = await run(cliBin, ['build', ...cdiArgs]);
    expect(built.code, `${built.stdout}\n${built.stderr}`).toBe(0);
    const checked = await run(cliBin, ['verify', ...cdiArgs, '--hotplug', 'none']);
    expect(checked.code, `${checked.stdout}\n${checked.stderr}`).toBe(0);
    expect(checked.stdout).toContain('pass  cdi-spec  /usr/bin/nvidia-ctk cdi generate --output=/var/run/cdi/nvidia.yaml ran: failed to initialize NVML: ERROR_DRIVER_NOT_LOADED (no NVIDIA GPU in this VM)');
    expect(checked.stdout).not.toContain('oci-hook-chain');
    expect(checked.stdout).toContain('pass  container-run  ');
  }, 600_000);

  it('verifies the guest with signature enforcement on (--kernel-arg module.sig_enforce=1): signed modules load', async () => {
    const enforced = await run(cliBin, ['verify', ...args, '--kernel-arg', 'module.sig_enforce=1', '--hotplug', 'none']);
    expect(enforced.code, `${enforced.stdout}\n${enforced.stderr}`).toBe(0);
    expect(enforced.stdout).toContain('with module.sig_enforce=1');
    expect(enforced.stdout).toContain('skip  pcie-hotplug  not asked for (--hotplug none)');
    expect(enforced.stdout).toContain('skip  bridge-hotplug  not asked for (--hotplug none)');
    expect(enforced.stdout).toContain('pass  module-sig-enforced  sig_enforce Y');
    expect(enforced.stdout).toContain('pass  module-loads:nvidia  loadable: every symbol resolved, no NVIDIA GPU in this VM (No such device)');
    expect(enforced.stdout).toContain(`pass  module-signature-trusted  the kernel trusts ${TEST_SIGNER}'s signatures`);
  }, 600_000);

  it("fails a module the kernel refuses, with the kernel's and modprobe's own words: unsigned under enforcement, a dependency gone, a corrupt file, the firmware gone, an unknown symbol", async () => {
    const manifest = JSON.parse(readFileSync(join(out, 'nvidia-test/manifest.json'), 'utf8'));
    const driver = manifest.tasks.find((t: { id: string }) => t.id === 'driver').result;
    const inGuest = (name: string) => `/lib/modules/${release}/${driver.modules.find((m: string) => m.endsWith(`/${name}`))}`;
    const checks = guestChecks({ release, options: [], modules: driver.modules, signer: driver.signer, driverVersion: driver.driverVersion, sigEnforced: true });
    const boot = async (edit: (image: string, work: string) => void, append: string) => {
      const work = suiteDir('gpu-guest-broken-');
      const image = join(work, 'guest.img');
      execFileSync('cp', ['--sparse=always', join(out, 'nvidia-test/rootfs/kata-containers-nvidia-gpu.img'), image]);
      edit(image, work);
      const b = await bootGuest({
        kernel: join(out, 'nvidia-test/kernel', `vmlinuz-${release}`),
        initrd: await buildVerifyInitrd(work, verifyInit(checks, 'ext4'), new AbortController().signal),
        disk: image,
        append: `console=ttyS0 panic=-1 loglevel=4 ${append}`,
        accel: 'tcg',
        machine: 'q35',
        memoryMiB: 1024,
        timeoutMs: 400_000,
        logFile: join(work, 'console.log'),
        doneMarker: /^GG-DONE/m,
      });
      return new Map(parseChecks(b.console, checks.map((c) => c.name)).map((r) => [r.name, r]));
    };
    // debugfs edits the copy's ext4 in place: replace a file with given bytes, or remove it
    const replace = (image: string, work: string, path: string, bytes: Buffer) => {
      const local = join(work, 'replacement');
      writeFileSync(local, bytes);
      execFileSync('debugfs', ['-w', '-R', `rm ${path}`, image], { stdio: 'ignore' });
      execFileSync('debugfs', ['-w', '-R', `write ${local} ${path}`, image], { stdio: 'ignore' });
    };
    const dump = (image: string, work: string, path: string) => {
      execFileSync('debugfs', ['-R', `dump ${path} ${join(work, 'dumped')}`, image], { stdio: 'ignore' });
      return readFileSync(join(work, 'dumped'));
    };

    // nvidia.ko without its signature, on a kernel that enforces signatures
    const unsigned = await boot((image, work) => replace(image, work, inGuest('nvidia.ko'), stripSignature(dump(image, work, inGuest('nvidia.ko')))), 'module.sig_enforce=1');
    expect(unsigned.get('module-sig-enforced')).toMatchObject({ pass: true });
    expect(unsigned.get('module-loads:nvidia')).toMatchObject({ pass: false, detail: expect.stringMatching(/Key was rejected by service/) });
    expect(unsigned.get('module-signer:nvidia')).toMatchObject({ pass: false });

    // nvidia.ko gone (nvidia-uvm and nvidia-modeset need it), nvidia-modeset.ko no ELF file at all,
    // the GSP firmware gone
    const firmware = `/lib/firmware/nvidia/${NVIDIA_VERSION}`;
    const broken = await boot((image, work) => {
      execFileSync('debugfs', ['-w', '-R', `rm ${inGuest('nvidia.ko')}`, image], { stdio: 'ignore' });
      replace(image, work, inGuest('nvidia-modeset.ko'), Buffer.from('not a kernel module\n'.repeat(64)));
      const listing = execFileSync('debugfs', ['-R', `ls -p ${firmware}`, image], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
      const files = listing.split('\n').map((l) => l.split('/')[5]).filter((n): n is string => !!n && n.startsWith('gsp_'));
      expect(files.length).toBeGreaterThan(0);
      for (const f of files) execFileSync('debugfs', ['-w', '-R', `rm ${firmware}/${f}`, image], { stdio: 'ignore' });
    }, '');
    expect(broken.get('gsp-firmware')).toMatchObject({ pass: false, detail: `no gsp_*.bin in ${firmware}: the driver cannot boot a GSP GPU (Turing and newer)` });
    expect(broken.get('module-present:nvidia')).toMatchObject({ pass: false });
    expect(broken.get('module-loads:nvidia')).toMatchObject({ pass: false, detail: expect.stringMatching(/could not insert 'nvidia'|not found/) });
    expect(broken.get('module-deps:nvidia-uvm')).toMatchObject({ pass: false, detail: expect.stringMatching(/missing: \S+\/nvidia\.ko/) });
    expect(broken.get('module-vermagic:nvidia-modeset')).toMatchObject({ pass: false, detail: expect.stringMatching(/Exec format error/) });
    // the module left as it was still passes its own checks
    expect(broken.get('module-vermagic:nvidia-uvm')).toMatchObject({ pass: true });

    // nvidia.ko asking for a kernel symbol this kernel does not export (one import renamed in its
    // string table, as a module built for another kernel configuration would): Unknown symbol
    let renamed = '';
    const unknown = await boot((image, work) => {
      const ko = stripSignature(dump(image, work, inGuest('nvidia.ko')));
      renamed = renameImport(ko);
      replace(image, work, inGuest('nvidia.ko'), ko);
    }, '');
    expect(unknown.get('module-loads:nvidia')).toMatchObject({ pass: false, detail: expect.stringMatching(/Unknown symbol in module/) });
    expect(unknown.get('module-loads:nvidia')!.detail).toMatch(new RegExp(`Unknown symbol \\w*${renamed.slice(-8)}`));
  }, 1_200_000);

  it('keeps the module signing key out of every package, the rootfs and the image', () => {
    const files = [...readdirSync(join(out, 'nvidia-test/debs')).map((f) => join(out, 'nvidia-test/debs', f)), join(out, 'nvidia-test/rootfs/kata-containers-nvidia-gpu.tar')];
    for (const f of files) {
      const listing = f.endsWith('.deb') ? execFileSync('dpkg-deb', ['-c', f], { encoding: 'utf8', maxBuffer: 1 << 26 }) : execFileSync('tar', ['-tf', f], { encoding: 'utf8', maxBuffer: 1 << 26 });
      expect(listing, f).not.toMatch(/gpu-guest-signing\.pem|signing_key\.pem/);
    }
    // the key's own bytes, anywhere in the image
    const keyLine = readFileSync(testSigningKey(sharedCacheDir()).key, 'utf8').split('\n')[1]!;
    expect(execFileSync('sh', ['-c', 'grep -c -aF -- "$1" "$2" || true', 'sh', keyLine, join(out, 'nvidia-test/rootfs/kata-containers-nvidia-gpu.img')], { encoding: 'utf8' }).trim()).toBe('0');
  });
});
