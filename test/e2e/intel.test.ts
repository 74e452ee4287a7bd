import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DEBIAN_TARBALL, debianKernelVersion, startKernelOrg, type KernelOrg } from '../fixtures/kernel-org.js';
import { cliBin, run, sharedCacheDir, suiteDir, writePipeline, leakedMounts } from '../helpers.js';

let server: KernelOrg;
let out: string;
let args: string[];
let build: Awaited<ReturnType<typeof run>>;
let verify: Awaited<ReturnType<typeof run>>;

// The intel pipeline (its rootfs, image, Kata topology and verify) through the boot check, on the
// suite's one kernel build: the nvidia test pipeline's kernel section and source, so that the suite
// compiles one kernel, not two. What the intel fragment asks of the kernel (i915 built in) is
// proven on the real tree by kernel-config.test.ts; its compile is the intel main job's. The guest's
// flavour follows the kernel's local version, so its files are named nvidia-gpu here.
beforeAll(async () => {
  server = await startKernelOrg([{ path: `v6.x/linux-${debianKernelVersion()}.tar.xz`, file: DEBIAN_TARBALL }]);
  const dir = suiteDir('gpu-guest-e2e-');
  out = join(dir, 'out');
  const file = writePipeline(dir, 'intel', `  version: "6.1"\n  source:\n    mirrors: [${server.mirror}]\n`, '', 'nvidia');
  args = ['--pipeline', file, '--cache-dir', sharedCacheDir(), '--out-dir', out];
  build = await run(cliBin, ['build', ...args]);
  verify = await run(cliBin, ['verify', ...args]);
}, 2_400_000);
afterAll(async () => server?.close());

describe('intel guest end to end (kernel → rootfs → image → Kata topology → boot)', () => {
  it('builds the seven intel tasks', () => {
    expect(build.code, `${build.stdout}\n${build.stderr}`).toBe(0);
    expect(leakedMounts(sharedCacheDir())).toEqual([]);
    const manifest = JSON.parse(readFileSync(join(out, 'intel-test/manifest.json'), 'utf8'));
    expect(manifest.tasks.map((t: { id: string }) => t.id)).toEqual(['kernel-source', 'kernel-config', 'kernel-build', 'kernel-debs', 'rootfs', 'image', 'sbom']);
    const kata = readFileSync(join(out, 'intel-test/kata/configuration-nvidia-gpu.toml'), 'utf8');
    expect(kata).toContain('machine_type = "pc"');
    expect(kata).toContain('hotplug_vfio_on_root_bus = true');
    // the image names no apt source of the build (the host's mirror): the recipe's cleanup list
    const image = join(out, 'intel-test/rootfs/kata-containers-nvidia-gpu.img');
    const listing = execFileSync('debugfs', ['-R', 'ls -p /etc/apt/sources.list.d', image], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
    expect(listing.split('\n').map((l) => l.split('/')[5]).filter((n) => n && n !== '.' && n !== '..')).toEqual([]);
    const stat = execFileSync('debugfs', ['-R', 'stat /etc/apt/sources.list', image], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
    expect(stat).not.toMatch(/Inode:/);
  });

  it("boots on Kata's pc machine, every requested option on", () => {
    expect(verify.code, `${verify.stdout}\n${verify.stderr}`).toBe(0);
    expect(verify.stdout).toMatch(/pass {2}kernel-release {2}6\.1\.\d+-nvidia-gpu/);
    expect(verify.stdout).toContain('pass  config:CONFIG_PCI_MMCONFIG  on');
    for (const check of ['pcie-hotplug', 'bridge-hotplug']) {
      expect(verify.stdout).toContain(`skip  ${check}  machine pc (Kata's topology for this guest) has no PCIe root port or hotplug bridge: devices go onto the root bus`);
    }
    expect(verify.stdout).not.toContain('booting it again');
    // a container as Kata runs one, on pc too; no guest hook in an intel image, so no hook chain
    for (const check of ['share-9p', 'share-virtiofs', 'erofs-mount', 'overlay-mount', 'cgroup2', 'container-run', 'container-namespaces', 'container-cgroup-limits', 'container-seccomp']) {
      expect(verify.stdout).toMatch(new RegExp(`^pass {2}${check} {2}`, 'm'));
    }
    expect(verify.stdout).not.toContain('oci-hook-chain');
    const vsock = existsSync('/dev/vhost-vsock');
    expect(verify.stdout).toMatch(new RegExp(`^all \\d+ checks passed, ${vsock ? 2 : 3} skipped$`, 'm'));
  });

  it('bounds every boot: a guest that cannot finish in --timeout is E_BOOT_TIMEOUT with the console tail', async () => {
    const r = await run(cliBin, ['verify', '--timeout', '1', ...args]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^error: E_BOOT_TIMEOUT: the guest did not finish its checks within 1 s/m);
  });

  it('reports a check that fails inside the guest as E_VERIFY_FAILED, naming it', async () => {
    // a cache of hard links to the built entries (every one: the image's key is settled from what
    // the rootfs made), with one requested option the kernel does not have
    const dir = suiteDir('gpu-guest-verify-fail-');
    const cache = join(dir, 'cache');
    const plan = await run(cliBin, ['plan', '--json', ...args]);
    const tasks = JSON.parse(plan.stdout).tasks as { kind: string; key: string }[];
    const keyOf = (kind: string) => tasks.find((t) => t.kind === kind)!.key;
    mkdirSync(join(cache, 'entries'), { recursive: true });
    for (const t of tasks) execFileSync('cp', ['-al', join(sharedCacheDir(), 'entries', t.key), join(cache, 'entries')]);
    // and the kernel version the build resolved from the mirror (verify does not ask mirrors)
    execFileSync('cp', ['-a', join(sharedCacheDir(), 'resolutions'), cache]);
    const requested = join(cache, 'entries', keyOf('kernel-config'), 'out/requested.conf');
    const text = readFileSync(requested, 'utf8');
    rmSync(requested);
    writeFileSync(requested, `${text}CONFIG_GPU_GUEST_NOT_IN_THIS_KERNEL=y  # test.conf:1\n`);
    const r = await run(cliBin, ['verify', ...args.slice(0, 2), '--cache-dir', cache, '--out-dir', join(dir, 'out')]);
    expect(r.code, r.stderr).toBe(1);
    expect(r.stderr).toMatch(/^error: E_VERIFY_FAILED: 1 of \d+ checks failed in the guest/m);
    expect(r.stderr).toMatch(/^ {2}config:CONFIG_GPU_GUEST_NOT_IN_THIS_KERNEL: /m);
    expect(r.stdout).toMatch(/^FAIL {2}config:CONFIG_GPU_GUEST_NOT_IN_THIS_KERNEL/m);
  }, 600_000);
});
