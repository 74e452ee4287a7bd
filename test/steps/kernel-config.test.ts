import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { DEBIAN_TARBALL } from '../fixtures/kernel-org.js';
import { cliBin, pathWithout, run, sharedCacheDir, testDir, writePipeline } from '../helpers.js';

// The Debian tarball as a local source: its extracted tree is shared through the test cache.
const localSource = `  version: "6.1"\n  source:\n    tarball: ${DEBIAN_TARBALL}\n`;

async function configure(vendor: 'nvidia' | 'intel', fragment?: string, options: { kernelExtra?: string; env?: NodeJS.ProcessEnv; fragmentName?: string } = {}) {
  const dir = testDir();
  const file = writePipeline(dir, vendor, localSource + (options.kernelExtra ?? ''));
  const extra: string[] = [];
  if (fragment !== undefined) {
    const frag = join(dir, options.fragmentName ?? 'extra.conf');
    writeFileSync(frag, fragment);
    extra.push('--fragment', frag);
  }
  const r = await run(cliBin, ['build', '--until', 'kernel-config', '--pipeline', file, '--cache-dir', sharedCacheDir(), '--out-dir', join(dir, 'out'), ...extra], { env: options.env });
  return { ...r, dir };
}

// each kernel-config runs make olddefconfig on the real tree (25–40 s here); some tests run two or three
describe('kernel-config on the real kernel tree', { timeout: 600_000 }, () => {
  it('merges base and the intel fragment; every requested option survives', async () => {
    const r = await configure('intel');
    expect(r.code, r.stderr).toBe(0);
    const config = readFileSync(join(r.dir, 'out/intel-test/kernel-config/config'), 'utf8');
    for (const line of ['CONFIG_DRM=y', 'CONFIG_DRM_I915=y', 'CONFIG_DRM_I915_USERPTR=y', 'CONFIG_LOCALVERSION="-intel-gpu"', 'CONFIG_64BIT=y', 'CONFIG_VIRTIO_BLK=y']) {
      expect(config).toContain(`${line}\n`);
    }
  });

  it('reports a misspelled symbol as unknown', async () => {
    const r = await configure('nvidia', 'CONFIG_VIRTIO_BLKK=y\n');
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^error: E_UNKNOWN_SYMBOL: /m);
    expect(r.stderr).toMatch(/CONFIG_VIRTIO_BLKK=y \(extra\.conf:1\): CONFIG_VIRTIO_BLKK does not exist in this kernel/);
  });

  it('names the unmet dependency of an option that cannot survive', async () => {
    const r = await configure('nvidia', '# needs USB\nCONFIG_USB_STORAGE=y\n');
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^error: E_OPTION_DROPPED: 1 requested option did not survive make olddefconfig/m);
    expect(r.stderr).toMatch(/CONFIG_USB_STORAGE=y \(extra\.conf:2\): final \.config has it not set — unmet depends on .*USB.*\(not set: .*USB/);
  });

  it('names what forces on an option asked to be off', async () => {
    const r = await configure('nvidia', '# CONFIG_VIRTIO is not set\n');
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/# CONFIG_VIRTIO is not set \(extra\.conf:1\): final \.config has VIRTIO=y — forced on by .*VIRTIO_PCI/);
  });

  it('lets an allow-listed symbol drop, matching whole names; blank entries allow nothing', async () => {
    const ok = await configure('nvidia', 'CONFIG_USB_STORAGE=y\n', { kernelExtra: '  allowDropped: [CONFIG_USB_STORAGE]\n' });
    expect(ok.code, ok.stderr).toBe(0);
    const still = await configure('nvidia', 'CONFIG_USB_STORAGE=y\n', { kernelExtra: '  allowDropped: [USB, USB_STORAGE_X, CONFIG_USB_STOR]\n' });
    expect(still.code).toBe(1);
    expect(still.stderr).toContain('E_OPTION_DROPPED');
    const blank = await configure('nvidia', 'CONFIG_USB_STORAGE=y\n', { kernelExtra: '  allowDropped: ["", USB]\n' });
    expect(blank.code).toBe(2);
    expect(blank.stderr).toMatch(/kernel\.allowDropped\[0\]: expected a value matching/);
  });

  it('rejects a malformed fragment line before running make', async () => {
    const r = await configure('nvidia', 'CONFIG_A=y\nCONFIG_B yes\n', { fragmentName: 'typo.conf' });
    // an input error: exit 2, found by the plan's preflight before the kernel source is fetched
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/E_FRAGMENT_SYNTAX: typo\.conf:2: 'CONFIG_B yes' is not a config line/);
  });

  it('rejects a CONFIG_LOCALVERSION that disagrees with kernel.localVersion', async () => {
    const r = await configure('nvidia', 'CONFIG_LOCALVERSION="-other"\n');
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/E_FRAGMENT_CONFLICT: extra\.conf:1: CONFIG_LOCALVERSION="-other" disagrees with kernel\.localVersion -nvidia-gpu/);
  });

  it('takes a folder of fragments in name order', async () => {
    const dir = testDir();
    mkdirSync(join(dir, 'frags'));
    writeFileSync(join(dir, 'frags', '10-a.conf'), 'CONFIG_VIRTIO_BALLOON=y\n');
    writeFileSync(join(dir, 'frags', '20-b.conf'), '# CONFIG_VIRTIO_BALLOON is not set\n');
    const file = writePipeline(dir, 'nvidia', localSource);
    const r = await run(cliBin, ['build', '--until', 'kernel-config', '--pipeline', file, '--fragment', join(dir, 'frags'), '--cache-dir', sharedCacheDir(), '--out-dir', join(dir, 'out')]);
    expect(r.code, r.stderr).toBe(0);
    expect(readFileSync(join(dir, 'out/nvidia-test/kernel-config/config'), 'utf8')).toContain('# CONFIG_VIRTIO_BALLOON is not set');
  });

  // What the kata-agent and container workloads need of the guest kernel (issue: Kata could not
  // start a sandbox in the old guest), and what NVIDIA's driver needs: the shipped nvidia pipeline's
  // default profile must keep every one, so the profile cannot silently lose an option.
  const kataNeeds = [
    'VIRTIO_FS', 'FUSE_FS', 'OVERLAY_FS', 'EROFS_FS', 'DM_VERITY', 'DM_INIT', 'SECCOMP_FILTER',
    'MEMCG', 'CGROUP_PIDS', 'CGROUP_FREEZER', 'CPUSETS', 'CGROUP_SCHED', 'CFS_BANDWIDTH', 'BLK_CGROUP', 'CGROUP_HUGETLB', 'CGROUP_DEVICE', 'CGROUP_BPF', 'BPF_SYSCALL',
    'USER_NS', 'PID_NS', 'NET_NS', 'IPC_NS', 'UTS_NS',
    'HOTPLUG_PCI_PCIE', 'HOTPLUG_PCI_SHPC', 'HOTPLUG_PCI_ACPI', 'MEMORY_HOTPLUG', 'VIRTIO_MEM', 'VIRTIO_BALLOON',
    'NET_9P', 'NET_9P_VIRTIO', '9P_FS', 'BLK_DEV_LOOP', 'BLK_DEV_PMEM', 'FS_DAX', 'SCSI_VIRTIO',
    'NETFILTER', 'NF_TABLES', 'NF_CONNTRACK', 'NF_NAT', 'IP_NF_IPTABLES', 'IP6_NF_IPTABLES', 'NETFILTER_XT_MATCH_CONNTRACK',
    'VSOCKETS', 'VIRTIO_VSOCKETS', 'DEVTMPFS', 'VETH', 'BRIDGE', 'TUN', 'MACVTAP',
    // NVIDIA's driver, from the vendor fragment on top of the profile
    'PCI_MMCONFIG', 'MODULES', 'X86_PAT', 'MMU_NOTIFIER', 'HMM_MIRROR', 'DEVICE_PRIVATE',
  ];

  it('the shipped nvidia pipeline\'s default (kata) profile keeps every option the kata-agent and the driver need', async () => {
    const dir = testDir();
    const r = await run(cliBin, ['build', '--vendor', 'nvidia', '--until', 'kernel-config', '--set', `kernel.source.tarball=${DEBIAN_TARBALL}`, '--set', `driver.sha256=${'0'.repeat(64)}`, '--cache-dir', sharedCacheDir(), '--out-dir', join(dir, 'out')]);
    expect(r.code, r.stderr).toBe(0);
    const config = readFileSync(join(dir, 'out/nvidia/kernel-config/config'), 'utf8');
    const missing = kataNeeds.filter((o) => !config.includes(`CONFIG_${o}=y\n`));
    expect(missing).toEqual([]);
    expect(config).not.toMatch(/^CONFIG_DRM_NOUVEAU=[ym]$/m);
  });

  // Kata's fragment tree (tools/packaging/kernel/configs/fragments) laid out as Kata ships it, with
  // options of Kata's own files: a tree as input merges the way Kata's builder merges it.
  function kataTree(dir: string, whitelist = true) {
    const tree = join(dir, 'fragments');
    for (const sub of ['common/confidential_containers', 'x86_64', 's390x', 'gpu']) mkdirSync(join(tree, sub), { recursive: true });
    writeFileSync(join(tree, 'common', 'fs.conf'), '# Enable a whole bunch of filesystem related items\nCONFIG_OVERLAY_FS=y\nCONFIG_MISC_FILESYSTEMS=y\nCONFIG_EROFS_FS=y\n# Required in v6.8+ to use mounted loop devices\nCONFIG_BLK_DEV_WRITE_MOUNTED=y\n');
    writeFileSync(join(tree, 'common', 'virtio-extras.conf'), '# !confidential\nCONFIG_HW_RANDOM=y\nCONFIG_HW_RANDOM_VIRTIO=y\n');
    writeFileSync(join(tree, 'common', 'usb.conf'), '# !x86_64 !s390x\nCONFIG_USB_STORAGE=y\n');
    writeFileSync(join(tree, 'common', 'confidential_containers', 'tmpfs.conf'), 'CONFIG_NOT_A_SYMBOL_CC=y\n');
    writeFileSync(join(tree, 'x86_64', 'base.conf'), 'CONFIG_X86_X2APIC=y\n# Use the maximum number of CPUs supported by KVM (240)\nCONFIG_NR_CPUS=240\n');
    writeFileSync(join(tree, 's390x', 'base.conf'), 'CONFIG_NOT_A_SYMBOL_S390=y\n');
    writeFileSync(join(tree, 'gpu', 'nvidia.x86_64.conf.in'), '# NVIDIA GPU\nCONFIG_LOCALVERSION="-nvidia-gpu${CONF_GUEST_SUFFIX}"\nCONFIG_X86_PAT=y\n');
    if (whitelist) writeFileSync(join(tree, 'whitelist.conf'), 'CONFIG_NF_NAT_NEEDED\nCONFIG_BLK_DEV_WRITE_MOUNTED\n');
    return tree;
  }

  it('merges Kata\'s fragment tree as Kata\'s builder does: arch tags, the .conf.in placeholder, whitelist.conf', async () => {
    const dir = testDir();
    const tree = kataTree(dir);
    const file = writePipeline(dir, 'nvidia', localSource);
    const r = await run(cliBin, ['build', '--until', 'kernel-config', '--pipeline', file, '--fragment', tree, '--fragment', join(tree, 'gpu', 'nvidia.x86_64.conf.in'), '--cache-dir', sharedCacheDir(), '--out-dir', join(dir, 'out'), '--force', 'kernel-config']);
    expect(r.code, r.stderr).toBe(0);
    const requested = readFileSync(join(dir, 'out/nvidia-test/kernel-config/requested.conf'), 'utf8');
    for (const line of ['CONFIG_OVERLAY_FS=y  # fs.conf:2', 'CONFIG_HW_RANDOM_VIRTIO=y  # virtio-extras.conf:3', 'CONFIG_NR_CPUS=240  # base.conf:3', 'CONFIG_LOCALVERSION="-nvidia-gpu"  # nvidia.x86_64.conf.in:2']) expect(requested).toContain(`${line}\n`);
    expect(requested).not.toMatch(/USB_STORAGE|NOT_A_SYMBOL/);
    const config = readFileSync(join(dir, 'out/nvidia-test/kernel-config/config'), 'utf8');
    expect(config).toContain('CONFIG_NR_CPUS=240\n');
    expect(readFileSync(join(dir, 'out/nvidia-test/logs/kernel-config.log'), 'utf8')).toMatch(/allowed to drop \(kernel\.allowDropped or the Kata tree's whitelist\.conf\): CONFIG_BLK_DEV_WRITE_MOUNTED=y \(fs\.conf:6\): CONFIG_BLK_DEV_WRITE_MOUNTED does not exist in this kernel/);
  });

  it('names what a Kata tree asks for that this kernel lacks, until it is allow-listed; refuses an unknown placeholder', async () => {
    const dir = testDir();
    const tree = kataTree(dir, false);
    const file = writePipeline(dir, 'nvidia', localSource);
    const build = (...more: string[]) => run(cliBin, ['build', '--until', 'kernel-config', '--pipeline', file, '--fragment', tree, '--cache-dir', sharedCacheDir(), '--out-dir', join(dir, 'out'), ...more]);
    const missing = await build();
    expect(missing.code).toBe(1);
    expect(missing.stderr).toMatch(/^error: E_UNKNOWN_SYMBOL: 1 requested option names a symbol this kernel does not have \(fix the fragment, or list the symbol in kernel\.allowDropped\)\n {2}CONFIG_BLK_DEV_WRITE_MOUNTED=y \(fs\.conf:6\): CONFIG_BLK_DEV_WRITE_MOUNTED does not exist in this kernel/m);
    const allowed = await build('--set', 'kernel.allowDropped=BLK_DEV_WRITE_MOUNTED');
    expect(allowed.code, allowed.stderr).toBe(0);
    writeFileSync(join(tree, 'gpu', 'nvidia.x86_64.conf.in'), 'CONFIG_LOCALVERSION="-nvidia-gpu${CONF_GUEST_SUFFIX}${KATA_FLAVOUR}"\n');
    const placeholder = await build('--fragment', join(tree, 'gpu', 'nvidia.x86_64.conf.in'));
    expect(placeholder.code).toBe(2);
    expect(placeholder.stderr).toMatch(/E_FRAGMENT_SYNTAX: nvidia\.x86_64\.conf\.in:1: placeholder \$KATA_FLAVOUR is not one gpu-guest fills \(it knows CONF_GUEST_SUFFIX/);
  });

  it('names the apt package of a missing host tool', async () => {
    const bin = pathWithout(testDir(), ['make']);
    const r = await configure('nvidia', undefined, { env: { PATH: bin } });
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/E_MISSING_TOOL: kernel-config needs make, not found on this host \(run as root: apt-get install -y make\)/);
  });
});
