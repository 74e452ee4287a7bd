import { chmodSync, existsSync, mkdirSync, readdirSync, readFileSync, rmdirSync, writeFileSync } from 'node:fs';
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { buildDriverRun } from '../fixtures/driver.js';
import { repoRoot, testDir } from '../helpers.js';

const entrypoint = join(repoRoot, 'vgpu-manager/nvidia-driver');
const VERSION = '550.54.16';

/**
 * A node for `nvidia-driver init`, in a private mount and PID namespace: an empty /run (the
 * operator's /run/nvidia), /sys/module on a tmpfs (modprobe and rmmod stand-ins add and remove
 * /sys/module/<name>, firmware_class's path parameter is a file), /etc/modprobe.d a folder of the
 * test's. The node's tools are stand-ins that append their call to `calls`; nvidia-vgpu-mgr runs
 * until it is stopped. After init exits, what it left behind goes to `after`. Everything lives in the
 * namespaces, so nothing outlives the test, whatever happens.
 */
function node(options: { installer?: string; sriovFails?: boolean; rmmodFails?: boolean; preloaded?: boolean; prebuilt?: string[]; env?: NodeJS.ProcessEnv } = {}) {
  const dir = testDir('gpu-guest-vgpu-node-');
  const calls = join(dir, 'calls');
  const bin = join(dir, 'bin');
  mkdirSync(bin);
  mkdirSync(join(dir, 'modprobe.d'));
  mkdirSync(join(dir, 'drivers'));
  const stub = (name: string, body: string) => {
    writeFileSync(join(bin, name), `#!/bin/sh\necho "${name} $*" >> ${calls}\n${body}\n`);
    chmodSync(join(bin, name), 0o755);
  };
  stub('modprobe', 'mkdir -p /sys/module/$1 && echo 0 > /sys/module/$1/refcnt');
  stub('rmmod', options.rmmodFails ? 'exit 1' : 'for m in "$@"; do rm -rf /sys/module/$m; done');
  stub('apt-get', 'exit 0');
  stub('depmod', 'exit 0');
  // what vgpu.hostKernels puts in the image: /driver/prebuilt/<release>/ laid out as /lib/modules/<release>
  for (const release of options.prebuilt ?? []) {
    mkdirSync(join(dir, 'prebuilt', release, 'updates/nvidia'), { recursive: true });
    mkdirSync(join(dir, 'prebuilt', release, 'kernel/drivers/vfio'), { recursive: true });
    writeFileSync(join(dir, 'prebuilt', release, 'updates/nvidia/nvidia.ko'), 'module');
    writeFileSync(join(dir, 'prebuilt', release, 'kernel/drivers/vfio/vfio.ko'), 'module');
    writeFileSync(join(dir, 'prebuilt', release, 'modules.order'), 'kernel/drivers/vfio/vfio.ko\n');
  }
  mkdirSync(join(dir, 'lib-modules'));
  stub('sriov-manage', options.sriovFails ? 'exit 1' : 'exit 0');
  stub('nvidia-vgpud', 'exit 0');
  // like the real daemon: a pid file; it dies (status 3) once the test creates `mgr-dies`
  stub('nvidia-vgpu-mgr', `mkdir -p /var/run/nvidia-vgpu-mgr && echo $$ > /var/run/nvidia-vgpu-mgr/nvidia-vgpu-mgr.pid\ntrap 'echo "nvidia-vgpu-mgr stopped" >> ${calls}; exit 0' TERM\nwhile [ ! -e ${join(dir, 'mgr-dies')} ]; do sleep 0.2; done\nexit 3`);
  const installer = options.installer ?? `#!/bin/sh\necho "nvidia-installer $*" >> ${calls}\necho "installer cwd $(pwd)" >> ${calls}\n`;
  const run = buildDriverRun(dir, VERSION, { suffix: '-vgpu-kvm', installer });
  const setup = [
    'set -e',
    'mount -t tmpfs none /run',
    'mount -t tmpfs none /sys/module',
    'mkdir -p /sys/module/firmware_class/parameters && : > /sys/module/firmware_class/parameters/path',
    `mount --bind ${join(dir, 'modprobe.d')} /etc/modprobe.d`,
    `mount --bind ${join(dir, 'lib-modules')} /lib/modules`,
    options.preloaded ? 'mkdir -p /sys/module/nvidia && echo 0 > /sys/module/nvidia/refcnt' : ':',
    'set +e',
    `bash ${entrypoint} init; status=$?`,
    `{ echo "firmware path: [$(cat /sys/module/firmware_class/parameters/path)]"; grep -c " /run/nvidia/driver " /proc/self/mountinfo; ls /sys/module; } > ${join(dir, 'after')}`,
    'exit $status',
  ].join('\n');
  const env = {
    PATH: `${bin}:/usr/sbin:/usr/bin:/sbin:/bin`,
    DRIVER_VERSION: VERSION,
    RUN_FILE: run.file,
    KERNEL_VERSION: '6.8.0-31-generic',
    MODULE_PARAMS_DIR: join(dir, 'drivers'),
    PREBUILT_DIR: join(dir, 'prebuilt'),
    DELAY_BEFORE_VF_CREATION: '0',
    VF_RETRIES: '1',
    WATCH_INTERVAL: '0.2',
    ...options.env,
  };
  // --kill-child: when unshare goes, the namespace's first process goes, and with it all of the namespace
  const child = spawn('unshare', ['--mount', '--pid', '--fork', '--kill-child', '--mount-proc', '--propagation', 'private', '--', 'bash', '-c', setup], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  nodes.push(child);
  let out = '';
  let markReady: () => void;
  const ready = new Promise<void>((r) => (markReady = r));
  const take = (d: Buffer) => {
    out += d.toString();
    if (out.includes('nvidia-driver: ready')) markReady();
  };
  child.stdout!.on('data', take);
  child.stderr!.on('data', take);
  const done = new Promise<{ code: number | null; out: string }>((r) => child.on('close', (code) => (markReady(), r({ code, out }))));
  return {
    dir,
    ready,
    done,
    calls: () => (existsSync(calls) ? readFileSync(calls, 'utf8').trim().split('\n') : []),
    after: () => readFileSync(join(dir, 'after'), 'utf8'),
    /** The host pid of nvidia-driver: the child of the namespace's first process (unshare's child). */
    initPid: () => childrenOf(childrenOf(child.pid!)[0]!)[0]!,
  };
}

function childrenOf(pid: number): number[] {
  const kids: number[] = [];
  for (const name of readdirSync('/proc').filter((n) => /^\d+$/.test(n))) {
    try {
      const stat = readFileSync(`/proc/${name}/stat`, 'utf8');
      if (Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]) === pid) kids.push(Number(name));
    } catch {
      // gone meanwhile
    }
  }
  return kids;
}

// a test that fails before it stops its node must not leave it running
const nodes: ReturnType<typeof spawn>[] = [];
afterEach(() => {
  for (const child of nodes.splice(0)) if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
});

// the namespaces hide the host's /lib/modules behind a folder of the test's; a host without one (a
// container without its kernel's modules) gets an empty mount point for the test's duration only
let madeLibModules = false;
beforeAll(() => {
  if (!existsSync('/lib/modules')) {
    mkdirSync('/lib/modules');
    madeLibModules = true;
  }
});
afterAll(() => {
  if (madeLibModules) rmdirSync('/lib/modules');
});

describe('nvidia-driver init (the GPU Operator vgpu-manager contract)', () => {
  it('sets up the node in order, keeps it while running, and undoes everything in reverse on SIGTERM', async () => {
    const n = node();
    writeFileSync(join(n.dir, 'drivers/nvidia.conf'), 'NVreg_EnableGpuFirmware=1\nNVreg_RegistryDwords=RMIntrLockingMode=1\n');
    await n.ready;
    const pid = n.initPid();
    // while it runs: the firmware search path, the driver root for the other operands, module parameters
    expect(readFileSync(`/proc/${pid}/root/sys/module/firmware_class/parameters/path`, 'utf8')).toBe('/run/nvidia/driver/lib/firmware');
    expect(readFileSync(`/proc/${pid}/mountinfo`, 'utf8')).toMatch(/ \/run\/nvidia\/driver /);
    expect(readFileSync(`/proc/${pid}/mountinfo`, 'utf8')).not.toMatch(/ \/run\/nvidia\/driver\/sys /);
    expect(readFileSync(join(n.dir, 'modprobe.d/nvidia.conf'), 'utf8')).toBe('options nvidia NVreg_EnableGpuFirmware=1 NVreg_RegistryDwords=RMIntrLockingMode=1\n');
    process.kill(pid, 'SIGTERM');
    const r = await n.done;
    expect(r.code, r.out).toBe(0);
    const calls = n.calls();
    const installer = calls.find((c) => c.startsWith('nvidia-installer '))!;
    expect(installer).toMatch(/^nvidia-installer .*--kernel-name=6\.8\.0-31-generic --ui=none --no-questions --accept-license --no-systemd --tmpdir \/tmp\/tmp\.\w+ --skip-module-load$/);
    // the .run is unpacked in that temporary folder, not in the container's root
    expect(calls.find((c) => c.startsWith('installer cwd '))).toMatch(/^installer cwd \/tmp\/tmp\.\w+\//);
    expect(calls.filter((c) => !c.startsWith('nvidia-installer ') && !c.startsWith('installer cwd '))).toEqual([
      'apt-get -qq update',
      'apt-get install -y -qq --no-install-recommends linux-headers-6.8.0-31-generic',
      'modprobe nvidia',
      'modprobe nvidia_vgpu_vfio',
      'nvidia-vgpud ',
      'nvidia-vgpu-mgr ',
      'sriov-manage -e ALL',
      'nvidia-vgpud ',
      // the stop, in reverse
      'sriov-manage -d ALL',
      'nvidia-vgpu-mgr stopped',
      'rmmod nvidia_vgpu_vfio',
      'rmmod nvidia',
    ]);
    expect(calls.indexOf('apt-get -qq update')).toBeLessThan(calls.indexOf(installer));
    expect(calls.indexOf(installer)).toBeLessThan(calls.indexOf('modprobe nvidia'));
    // the node as it was: no firmware path, nothing mounted, no module
    expect(n.after()).toBe('firmware path: []\n0\nfirmware_class\n');
    expect(existsSync(join(n.dir, 'modprobe.d/nvidia.conf'))).toBe(false);
    expect(r.out).toMatch(/nvidia-driver: stop requested\nnvidia-driver: undoing 6 step\(s\)/);
  }, 120_000);

  it('exits 1 when a step fails, after undoing the steps done before it', async () => {
    const n = node({ sriovFails: true });
    const r = await n.done;
    expect(r.code).toBe(1);
    expect(r.out).toContain('nvidia-driver: error: sriov-manage -e ALL failed 2 times');
    expect(n.calls().filter((c) => c.startsWith('sriov-manage'))).toEqual(['sriov-manage -e ALL', 'sriov-manage -e ALL']);
    expect(n.calls().slice(-3)).toEqual(['nvidia-vgpu-mgr stopped', 'rmmod nvidia_vgpu_vfio', 'rmmod nvidia']);
    expect(n.after()).toBe('firmware path: []\n0\nfirmware_class\n');
  }, 120_000);

  it('exits 1 with what to do when the daemon dies, when the installer fails, when the .run is missing, and without headers under HOST_HEADERS=never', async () => {
    const dying = node();
    await dying.ready;
    writeFileSync(join(dying.dir, 'mgr-dies'), '');
    const died = await dying.done;
    expect(died.code).toBe(1);
    expect(died.out).toMatch(/nvidia-driver: error: nvidia-vgpu-mgr \(pid \d+\) exited with status 3/);
    expect(dying.after()).toBe('firmware path: []\n0\nfirmware_class\n');

    const broken = node({ installer: '#!/bin/sh\nexit 1\n' });
    const failed = await broken.done;
    expect(failed.code).toBe(1);
    expect(failed.out).toContain('nvidia-driver: error: the driver installer failed');
    expect(broken.calls().some((c) => c.startsWith('modprobe'))).toBe(false);

    const missing = await node({ env: { RUN_FILE: '/nonexistent/NVIDIA.run' } }).done;
    expect(missing.code).toBe(1);
    expect(missing.out).toContain('/nonexistent/NVIDIA.run is missing from the image');

    const offline = node({ env: { HOST_HEADERS: 'never' } });
    const refused = await offline.done;
    expect(refused.code).toBe(1);
    expect(refused.out).toContain('no modules prebuilt for kernel 6.8.0-31-generic (this image has: none) and no kernel headers in /lib/modules/6.8.0-31-generic/build, with HOST_HEADERS=never');
    expect(offline.calls()).toEqual([]);
  }, 180_000);

  it('removes a driver an earlier container left loaded, and refuses to go on when it is in use', async () => {
    const left = node({ preloaded: true });
    await left.ready;
    expect(left.calls()[0]).toBe('rmmod nvidia');
    process.kill(left.initPid(), 'SIGTERM');
    expect((await left.done).code).toBe(0);

    const busy = node({ preloaded: true, rmmodFails: true });
    const r = await busy.done;
    expect(r.code).toBe(1);
    expect(r.out).toContain('a previous NVIDIA driver is loaded and in use');
    expect(busy.calls()).toEqual(['rmmod nvidia']);
  }, 120_000);

  it('uses the modules prebuilt for the node kernel, with no headers and no network (HOST_HEADERS=never)', async () => {
    const n = node({ prebuilt: ['6.8.0-31-generic', '6.1.0-56-amd64'], env: { HOST_HEADERS: 'never' } });
    await n.ready;
    const pid = n.initPid();
    // the prebuilt tree is the container's /lib/modules/<release>: NVIDIA's and the kernel's modules they need
    expect(existsSync(`/proc/${pid}/root/lib/modules/6.8.0-31-generic/updates/nvidia/nvidia.ko`)).toBe(true);
    expect(existsSync(`/proc/${pid}/root/lib/modules/6.8.0-31-generic/kernel/drivers/vfio/vfio.ko`)).toBe(true);
    process.kill(pid, 'SIGTERM');
    const r = await n.done;
    expect(r.code, r.out).toBe(0);
    expect(r.out).toContain('kernel modules prebuilt for 6.8.0-31-generic in this image: no headers needed');
    const calls = n.calls();
    expect(calls.some((c) => c.startsWith('apt-get'))).toBe(false);
    expect(calls.find((c) => c.startsWith('nvidia-installer '))).toMatch(/ --no-kernel-modules$/);
    expect(calls.indexOf('depmod 6.8.0-31-generic')).toBeLessThan(calls.indexOf('modprobe nvidia'));
    // nothing of it reached the host's /lib/modules
    expect(readdirSync(join(n.dir, 'lib-modules'))).toEqual(['6.8.0-31-generic']);
  }, 120_000);

  it('refuses a node kernel it has no modules for under HOST_HEADERS=never, naming the ones it has', async () => {
    const n = node({ prebuilt: ['6.1.0-56-amd64'], env: { HOST_HEADERS: 'never' } });
    const r = await n.done;
    expect(r.code).toBe(1);
    expect(r.out).toContain('no modules prebuilt for kernel 6.8.0-31-generic (this image has: 6.1.0-56-amd64) and no kernel headers in /lib/modules/6.8.0-31-generic/build, with HOST_HEADERS=never: add 6.8.0-31-generic to vgpu.hostKernels');
    expect(n.calls()).toEqual([]);
  }, 120_000);

  it('answers usage for an unknown command', async () => {
    const child = spawn('bash', [entrypoint, 'start'], { env: { PATH: '/usr/bin:/bin', DRIVER_VERSION: VERSION } });
    const code = await new Promise((r) => child.on('close', r));
    expect(code).toBe(2);
  });
});

