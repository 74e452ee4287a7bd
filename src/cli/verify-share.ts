import { randomBytes } from 'node:crypto';
import { spawn } from 'node:child_process';
import { chmodSync, closeSync, copyFileSync, existsSync, mkdirSync, openSync, realpathSync, symlinkSync, writeFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import { GuestError } from '../model/errors.js';
import { requireHostTools } from '../sys/host-tools.js';
import { runLogged } from '../sys/exec.js';
import { TaskLog } from '../sys/task-log.js';
import { findOnPath } from '../sys/which.js';

// The host's side of verify's container checks: the folder the guest gets over 9p and virtio-fs
// (runtime, container rootfs, bundles, erofs layer) and the virtiofsd that serves it.

/** The 9p share's mount tag: QEMU exports the share under it, the guest mounts it by it. */
export const SHARE_TAG = 'gg-share';
/** The same folder's tag over virtio-fs (Kata's default shared_fs), where the host has a virtiofsd. */
export const VIRTIOFS_TAG = 'gg-virtiofs';
/** Where Debian's QEMU keeps virtiofsd (qemu-system-common), and where newer systems do. */
const VIRTIOFSD = ['/usr/lib/qemu/virtiofsd', '/usr/libexec/virtiofsd'];

/** The host's virtiofsd, if it has one. */
export function findVirtiofsd(): string | undefined {
  return VIRTIOFSD.find((p) => existsSync(p));
}

/**
 * Serves `dir` over vhost-user at `socket` for one boot (the compatibility options both the C
 * virtiofsd of QEMU 7 and the Rust one take); resolves once it listens, rejects if it exits first.
 */
export function startVirtiofsd(bin: string, dir: string, socket: string, logFile: string): Promise<{ stop: () => void }> {
  const log = openSync(logFile, 'w');
  const child = spawn(bin, [`--socket-path=${socket}`, '-o', `source=${dir}`, '-o', 'cache=none', '-o', 'sandbox=chroot'], { stdio: ['ignore', log, log] });
  closeSync(log);
  const stop = () => child.kill('SIGTERM');
  return new Promise((resolve, reject) => {
    let timer: NodeJS.Timeout | undefined;
    const failed = (why: string) => {
      clearTimeout(timer);
      stop();
      reject(new GuestError('E_COMMAND_FAILED', `${bin} ${why}: verify cannot share the container's files over virtio-fs (its log: ${logFile})`));
    };
    child.once('error', (err) => failed(`cannot run: ${err.message}`));
    child.once('exit', (code) => failed(`exited (${code}) before it listened on ${socket}`));
    const started = Date.now();
    const poll = () => {
      if (existsSync(socket)) {
        child.removeAllListeners('exit').removeAllListeners('error');
        return resolve({ stop });
      }
      if (Date.now() - started > 10_000) return failed(`did not listen on ${socket} within 10 s`);
      timer = setTimeout(poll, 20);
    };
    poll();
  });
}


/** The limits the container runs under, and what the container must read back from its cgroup. */
export const LIMITS = { memory: 64 * 2 ** 20, pids: 64, cpuQuota: 50_000, cpuPeriod: 100_000 };
/** The container's root maps to this host uid (and gid), 65536 of them: a user namespace. */
export const ID_BASE = 100_000;
/** seccomp makes mkdir fail with this errno (EHOSTDOWN, "Host is down"): nothing else would. */
const SECCOMP_ERRNO = 112;
export const HOSTNAME = 'gg-verify';
const APPLETS = ['sh', 'cat', 'readlink', 'ls', 'grep', 'touch', 'mkdir', 'hostname'];

/** The container's bundle in the runtime's root; its rootfs is the share's, under an overlay. */
export const BUNDLE = '/run/gg-ctr';

/** Where Kata's agent finds guest hooks (guest_hook_path) and how it calls one: its name, then the stage. */
export interface GuestHook {
  /** Inside the image, e.g. usr/share/oci/hooks/prestart/nvidia-container-toolkit.sh. */
  path: string;
}

/** An OCI runtime-spec config.json for the verify container: every namespace, cgroup v2 limits, a seccomp filter. */
export function containerSpec(o: { rootfs: string; hook?: GuestHook; gpu?: boolean; id: string }): object {
  const hookPath = o.hook ? `/${o.hook.path}` : undefined;
  return {
    ociVersion: '1.0.2',
    process: {
      terminal: false,
      user: { uid: 0, gid: 0 },
      args: ['/bin/sh', '/gg/container.sh'],
      env: ['PATH=/bin', ...(o.gpu ? ['NVIDIA_VISIBLE_DEVICES=all', 'NVIDIA_DRIVER_CAPABILITIES=compute,utility'] : [])],
      cwd: '/',
      noNewPrivileges: true,
    },
    root: { path: o.rootfs, readonly: false },
    hostname: HOSTNAME,
    mounts: [
      { destination: '/proc', type: 'proc', source: 'proc' },
      { destination: '/dev', type: 'tmpfs', source: 'tmpfs', options: ['nosuid', 'strictatime', 'mode=755', 'size=65536k'] },
      { destination: '/sys', type: 'sysfs', source: 'sysfs', options: ['nosuid', 'noexec', 'nodev', 'ro'] },
      { destination: '/sys/fs/cgroup', type: 'cgroup', source: 'cgroup', options: ['nosuid', 'noexec', 'nodev', 'relatime', 'ro'] },
      { destination: '/tmp', type: 'tmpfs', source: 'tmpfs', options: ['nosuid', 'nodev', 'mode=1777'] },
    ],
    // as Kata's agent adds every hook of guest_hook_path/prestart: args are the hook's name and the stage
    ...(hookPath ? { hooks: { prestart: [{ path: hookPath, args: [basename(hookPath), 'prestart'] }] } } : {}),
    // crun writes what hooks print to these files (the agent keeps it in its log)
    annotations: { 'run.oci.hooks.stdout': `/run/gg-hook-${o.id}.out`, 'run.oci.hooks.stderr': `/run/gg-hook-${o.id}.err` },
    linux: {
      namespaces: ['pid', 'network', 'ipc', 'uts', 'mount', 'cgroup', 'user'].map((type) => ({ type })),
      uidMappings: [{ containerID: 0, hostID: ID_BASE, size: 65536 }],
      gidMappings: [{ containerID: 0, hostID: ID_BASE, size: 65536 }],
      cgroupsPath: `/gg-verify/${o.id}`,
      resources: {
        devices: [{ allow: false, access: 'rwm' }],
        memory: { limit: LIMITS.memory },
        pids: { limit: LIMITS.pids },
        cpu: { quota: LIMITS.cpuQuota, period: LIMITS.cpuPeriod },
      },
      seccomp: {
        defaultAction: 'SCMP_ACT_ALLOW',
        architectures: ['SCMP_ARCH_X86_64'],
        syscalls: [{ names: ['mkdir', 'mkdirat'], action: 'SCMP_ACT_ERRNO', errnoRet: SECCOMP_ERRNO }],
      },
      maskedPaths: ['/proc/kcore', '/proc/keys', '/proc/timer_list'],
      readonlyPaths: ['/proc/sys', '/proc/sysrq-trigger'],
    },
  };
}

/** What the container prints: the guest's checks read it back line by line (GG-CTR <what> <value>). */
const CONTAINER_SCRIPT = `#!/bin/sh
echo GG-CTR pid $$
echo GG-CTR hostname $(hostname)
echo GG-CTR uid_map $(cat /proc/self/uid_map)
for n in pid net ipc uts mnt cgroup user; do echo GG-CTR ns $n $(readlink /proc/self/ns/$n); done
echo GG-CTR net $(ls /sys/class/net)
for f in memory.max pids.max cpu.max; do echo GG-CTR cgroup $f $(cat /sys/fs/cgroup/$f); done
echo GG-CTR $(grep '^Seccomp:' /proc/self/status)
touch /tmp/gg-file && echo GG-CTR touch ok
echo GG-CTR mkdir $(mkdir /tmp/gg-dir 2>&1)
[ -e /dev/nvidiactl ] && echo GG-CTR gpu /dev/nvidiactl
echo GG-CTR done
`;

/**
 * On the host: the folder QEMU shares with the guest over 9p. It holds the OCI runtime (the host's
 * crun with its libraries and loader, so it runs whatever the guest's libc), the container's rootfs
 * (the host's static busybox and the script above), the bundles' config.json files, and an erofs
 * layer; a random marker proves the guest reads this very share.
 */
export async function prepareContainerShare(work: string, o: { hook?: GuestHook }, signal: AbortSignal): Promise<{ dir: string; marker: string }> {
  const dir = join(work, 'share');
  const marker = randomBytes(8).toString('hex');
  await requireHostTools('verify-containers');
  const log = new TaskLog(join(work, 'share.log'));
  try {
    mkdirSync(dir, { recursive: true });
    writeFileSync(join(dir, 'MARKER'), `${marker}\n`);
    await copyRuntime(join(dir, 'runtime'), log, signal);
    const rootfs = join(dir, 'ctr', 'rootfs');
    for (const d of ['bin', 'proc', 'sys', 'dev', 'tmp', 'gg']) mkdirSync(join(rootfs, d), { recursive: true });
    copyFileSync('/bin/busybox', join(rootfs, 'bin/busybox'));
    chmodSync(join(rootfs, 'bin/busybox'), 0o755);
    for (const a of APPLETS) symlinkSync('busybox', join(rootfs, 'bin', a));
    writeFileSync(join(rootfs, 'gg/container.sh'), CONTAINER_SCRIPT, { mode: 0o755 });
    writeFileSync(join(dir, 'ctr', 'config.json'), JSON.stringify(containerSpec({ rootfs: 'rootfs', hook: o.hook, id: 'plain' }), null, 2));
    if (o.hook) writeFileSync(join(dir, 'ctr', 'config-gpu.json'), JSON.stringify(containerSpec({ rootfs: `${BUNDLE}/rootfs`, hook: o.hook, gpu: true, id: 'gpu' }), null, 2));
    const layer = join(work, 'layer');
    mkdirSync(layer, { recursive: true });
    writeFileSync(join(layer, 'MARKER'), `${marker}\n`);
    await runLogged(log, 'mkfs.erofs', [join(dir, 'layer.erofs'), layer], { signal });
  } finally {
    log.close();
  }
  return { dir, marker };
}

/** crun, every library ldd names for it, and the loader: run as `ld.so --library-path lib crun`. */
async function copyRuntime(dir: string, log: TaskLog, signal: AbortSignal): Promise<void> {
  // present: requireHostTools said so
  const crun = (await findOnPath('crun'))!;
  mkdirSync(join(dir, 'lib'), { recursive: true });
  copyFileSync(crun, join(dir, 'crun'));
  chmodSync(join(dir, 'crun'), 0o755);
  const ldd = await runLogged(log, 'ldd', [crun], { signal, capture: true });
  let loader: string | undefined;
  for (const line of ldd.split('\n')) {
    const lib = /=>\s+(\/\S+)\s+\(/.exec(line);
    if (lib) copyFileSync(realpathSync(lib[1]!), join(dir, 'lib', basename(lib[1]!)));
    else if (/^\s*(\/\S+ld-linux\S*)\s+\(/.test(line)) loader = /^\s*(\/\S+)/.exec(line)![1];
  }
  if (!loader || !existsSync(loader)) throw new GuestError('E_MISSING_TOOL', `ldd ${crun} names no dynamic loader: verify needs a dynamically linked crun from Debian (apt-get install -y crun)`);
  copyFileSync(realpathSync(loader), join(dir, 'ld.so'));
  chmodSync(join(dir, 'ld.so'), 0o755);
}

