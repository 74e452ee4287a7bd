import { randomBytes } from 'node:crypto';
import { chmodSync, copyFileSync, existsSync, mkdirSync, realpathSync, symlinkSync, writeFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import { GuestError } from '../model/errors.js';
import { runLogged } from '../sys/exec.js';
import { TaskLog } from '../sys/task-log.js';
import { findOnPath } from '../sys/which.js';
import { quote, type CheckResult, type GuestCheck } from './verify-init.js';

/** The 9p share's mount tag: QEMU exports the share under it, the guest mounts it by it. */
export const SHARE_TAG = 'gg-share';

/**
 * What the container checks need of the guest kernel, by what Kata does with it: the container's
 * files come over a 9p (or virtio-fs) share, overlayfs makes them writable, an OCI runtime runs
 * the container in every namespace with cgroup v2 limits (device control is a BPF program) and a
 * seccomp filter; image layers come as erofs on a loop device.
 */
export const CONTAINER_NEEDS = [
  'NET_9P_VIRTIO', '9P_FS', 'OVERLAY_FS', 'TMPFS',
  'NAMESPACES', 'UTS_NS', 'IPC_NS', 'PID_NS', 'NET_NS', 'USER_NS',
  'CGROUPS', 'MEMCG', 'CGROUP_PIDS', 'CGROUP_SCHED', 'CFS_BANDWIDTH', 'BPF_SYSCALL', 'CGROUP_BPF',
  'SECCOMP', 'SECCOMP_FILTER',
  'EROFS_FS', 'BLK_DEV_LOOP',
];

/** The checks the container share enables, in the order the guest runs them. */
export const CONTAINER_CHECKS = ['share-9p', 'erofs-mount', 'overlay-mount', 'cgroup2', 'container-run', 'container-namespaces', 'container-cgroup-limits', 'container-seccomp'];

/** The options of CONTAINER_NEEDS a built kernel config lacks. */
export function missingContainerOptions(config: string): string[] {
  const on = new Set([...config.matchAll(/^CONFIG_([A-Za-z0-9_]+)=y$/gm)].map((m) => m[1]!));
  return CONTAINER_NEEDS.filter((o) => !on.has(o)).map((o) => `CONFIG_${o}`);
}

/**
 * The container checks of a kernel that lacks what they need, reported without a boot: skipped
 * for the minimal profile (the smallest guest, chosen knowingly), failed for any other kernel,
 * naming the options it lacks.
 */
export function containerChecksNotRun(missing: string[], minimalProfile: boolean, gpu: 'oci-hook' | 'cdi' | undefined): CheckResult[] {
  const lacks = `the kernel lacks ${missing.join(', ')}`;
  const detail = minimalProfile
    ? `${lacks} (kernel.profile: minimal; the kata profile runs containers)`
    : `${lacks}: Kata cannot share or run a container in this guest (use kernel.profile: kata, or add them to a fragment)`;
  const toolkit = gpu === 'oci-hook' ? ['oci-hook-chain'] : gpu === 'cdi' ? ['cdi-spec'] : [];
  return [...CONTAINER_CHECKS, ...toolkit].map((name) => ({ name, pass: minimalProfile, ...(minimalProfile ? { skipped: true } : {}), detail }));
}

/**
 * Kata's agent talks to the host over vsock. QEMU can give the guest one only where the host has
 * /dev/vhost-vsock; the guest's virtio transport must then bind it. Returns the check with the CID
 * to give QEMU, or why it cannot run.
 */
export function vsockCheck(config: string, hostHasVsock: boolean): { check: GuestCheck; cid: number } | { why: string } {
  if (!hostHasVsock) return { why: 'this host has no /dev/vhost-vsock (modprobe vhost_vsock; a VM or container host may not offer it): QEMU cannot give the guest a vsock' };
  if (!/^CONFIG_VIRTIO_VSOCKETS=y$/m.test(config)) return { why: 'the kernel lacks CONFIG_VIRTIO_VSOCKETS' };
  const cid = 3 + randomBytes(2).readUInt16BE(0);
  const driver = '/sys/bus/virtio/drivers/vmw_vsock_virtio_transport';
  return {
    cid,
    check: {
      name: 'vsock',
      script: `ls ${driver} 2>/dev/null | grep -q '^virtio' || ${fail('no virtio device bound to the vsock transport')}; [ -c /dev/vsock ] || ${fail('no /dev/vsock')}; echo "virtio vsock transport bound, /dev/vsock present (guest CID ${cid})"`,
    },
  };
}

/** The limits the container runs under, and what the container must read back from its cgroup. */
const LIMITS = { memory: 64 * 2 ** 20, pids: 64, cpuQuota: 50_000, cpuPeriod: 100_000 };
/** The container's root maps to this host uid (and gid), 65536 of them: a user namespace. */
const ID_BASE = 100_000;
/** seccomp makes mkdir fail with this errno (EHOSTDOWN, "Host is down"): nothing else would. */
const SECCOMP_ERRNO = 112;
const HOSTNAME = 'gg-verify';
const APPLETS = ['sh', 'cat', 'readlink', 'ls', 'grep', 'touch', 'mkdir', 'hostname'];

/** In the guest: the runtime's root (the image under a tmpfs overlay) and the container's bundles. */
const G = '/run/gg/guest';
const BUNDLE = '/run/gg-ctr';
const GPU_BUNDLE = '/run/gg-ctr-gpu';
const RUNTIME = '/run/gg-rt';

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
  const crun = await findOnPath('crun');
  if (!crun) throw new GuestError('E_MISSING_TOOL', 'verify runs a container in the guest with crun, not found on this host (run as root: apt-get install -y crun)');
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

/** The guest's side: mounts the share, an erofs layer, the overlays, cgroup2; runs the containers. */
export function containerChecks(o: { marker: string; hook?: GuestHook; cdiUnit?: string }): GuestCheck[] {
  // the runtime's root made the root of a mount namespace of its own, as switch_root does, not a
  // chroot: the kernel refuses a user namespace to a chrooted process (clone: EPERM)
  const crun = (bundle: string, id: string, out: string) =>
    `unshare -m --propagation private sh -c 'cd ${G} && mount --move . / && exec chroot . ${RUNTIME}/ld.so --library-path ${RUNTIME}/lib ${RUNTIME}/crun --root /run/gg-crun run --bundle ${bundle} ${id}' > ${out} 2>&1`;
  const line = (what: string) => `sed -n "s/^GG-CTR ${what} //p" /run/gg/ctr.out | head -n 1`;
  const checks: GuestCheck[] = [
    {
      name: 'share-9p',
      script: `mkdir -p /share && mount -t 9p -o trans=virtio,version=9p2000.L,ro ${SHARE_TAG} /share || ${fail(`cannot mount the 9p share ${SHARE_TAG}`)}; m=$(cat /share/MARKER); [ "$m" = ${quote(o.marker)} ] || ${fail('the share does not hold the marker the host wrote')}; echo "9p share ${SHARE_TAG} mounted, marker read back"`,
    },
    {
      name: 'erofs-mount',
      script: `mkdir -p /erofs && mount -t erofs -o ro,loop /share/layer.erofs /erofs || ${fail('cannot mount the erofs layer (a loop device on the share)')}; [ "$(cat /erofs/MARKER)" = ${quote(o.marker)} ] || ${fail('the erofs layer does not hold the marker')}; echo "erofs layer mounted through $(grep -m1 '/erofs ' /proc/mounts | cut -d' ' -f1)"`,
    },
    {
      name: 'overlay-mount',
      script: [
        'mkdir -p /run/gg && mount -t tmpfs -o size=128m tmpfs /run/gg && mkdir -p /run/gg/gu /run/gg/gw /run/gg/cu /run/gg/cw ' + G,
        `mount -t overlay overlay -o lowerdir=/mnt,upperdir=/run/gg/gu,workdir=/run/gg/gw ${G} || ${fail('cannot mount an overlay with the image as its lower layer')}`,
        `mkdir -p ${G}${BUNDLE}/rootfs ${G}${GPU_BUNDLE} ${G}${RUNTIME} ${G}/run/gg-crun`,
        `mount -t overlay overlay -o lowerdir=/share/ctr/rootfs,upperdir=/run/gg/cu,workdir=/run/gg/cw ${G}${BUNDLE}/rootfs || ${fail('cannot mount an overlay with the share as its lower layer')}`,
        `echo upper > ${G}${BUNDLE}/rootfs/gg/upper && [ ! -e /share/ctr/rootfs/gg/upper ] && [ -x ${G}${BUNDLE}/rootfs/bin/busybox ] || ${fail('the overlay does not write to its upper layer alone')}`,
        `echo "the container's rootfs: the share under a tmpfs overlay; the runtime's root: the image under one"`,
      ].join('; '),
    },
    {
      name: 'cgroup2',
      script: [
        `mount -t proc proc ${G}/proc && mount -t sysfs sysfs ${G}/sys && mount -t devtmpfs devtmpfs ${G}/dev || ${fail('cannot mount proc, sysfs and devtmpfs for the runtime')}`,
        `mount -t cgroup2 cgroup2 ${G}/sys/fs/cgroup || ${fail('cannot mount cgroup2')}`,
        `c=$(cat ${G}/sys/fs/cgroup/cgroup.controllers); for k in cpu memory pids; do case " $c " in *" $k "*) ;; *) echo "cgroup2 has no $k controller (it has: $c)"; exit 1;; esac; done`,
        'echo "cgroup2 controllers: $c"',
      ].join('; '),
    },
    {
      name: 'container-run',
      script: [
        `mount --bind /share/runtime ${G}${RUNTIME} && cp /share/ctr/config.json ${G}${BUNDLE}/ || ${fail('cannot place the runtime and the bundle')}`,
        `v=$(chroot ${G} ${RUNTIME}/ld.so --library-path ${RUNTIME}/lib ${RUNTIME}/crun --version | head -n 1)`,
        `${crun(BUNDLE, 'gg-verify', '/run/gg/ctr.out')}; r=$?`,
        `if [ $r -eq 0 ] && grep -q '^GG-CTR done' /run/gg/ctr.out; then echo "$v ran a container from the share (exit 0)"; else echo "$v: exit $r"; tail -n 3 /run/gg/ctr.out; cat ${G}/run/gg-hook-plain.err 2>/dev/null | tail -n 3; exit 1; fi`,
      ].join('; '),
    },
    {
      name: 'container-namespaces',
      script: [
        `[ -s /run/gg/ctr.out ] || ${fail('no container output (container-run failed)')}`,
        `for n in pid net ipc uts mnt cgroup user; do c=$(${line('ns $n')}); h=$(readlink /proc/1/ns/$n); [ -n "$c" ] && [ "$c" != "$h" ] || { echo "$n namespace not new: container $c, guest $h"; exit 1; }; done`,
        `p=$(${line('pid')}); [ "$p" = 1 ] || ${fail('the container process is not pid 1 of its namespace')}`,
        `h=$(${line('hostname')}); [ "$h" = ${HOSTNAME} ] || { echo "hostname $h, not ${HOSTNAME}"; exit 1; }`,
        `u=$(${line('uid_map')}); [ "$u" = "0 ${ID_BASE} 65536" ] || { echo "uid_map $u"; exit 1; }`,
        // a new network namespace has lo and the tunnels' fallback devices (sit0 …), none of the guest's own
        `l=$(${line('net')}); case " $l " in *" lo "*) ;; *) echo "no lo in the container (network devices: $l)"; exit 1;; esac`,
        `for d in $(ls /sys/class/net); do [ -e /sys/devices/virtual/net/$d ] && continue; case " $l " in *" $d "*) echo "the container sees the guest's $d"; exit 1;; esac; done`,
        `echo "pid net ipc uts mnt cgroup user all new; pid 1, hostname ${HOSTNAME}, uid 0 = ${ID_BASE} outside, network devices: $l"`,
      ].join('; '),
    },
    {
      name: 'container-cgroup-limits',
      script: [
        `m=$(${line('cgroup memory.max')}); p=$(${line('cgroup pids.max')}); c=$(${line('cgroup cpu.max')})`,
        'echo "memory.max $m, pids.max $p, cpu.max $c"',
        `[ "$m" = ${LIMITS.memory} ] && [ "$p" = ${LIMITS.pids} ] && [ "$c" = "${LIMITS.cpuQuota} ${LIMITS.cpuPeriod}" ]`,
      ].join('; '),
    },
    {
      name: 'container-seccomp',
      script: [
        `s=$(sed -n 's/^GG-CTR Seccomp: *//p' /run/gg/ctr.out); t=$(${line('touch')}); k=$(${line('mkdir')})`,
        'echo "Seccomp: $s (2 = filter); mkdir: $k"',
        `[ "$s" = 2 ] && [ "$t" = ok ] && echo "$k" | grep -q 'Host is down'`,
      ].join('; '),
    },
  ];
  if (o.hook) checks.push(hookChainCheck(o.hook, crun));
  if (o.cdiUnit) checks.push(cdiSpecCheck(o.cdiUnit));
  return checks;
}

/**
 * The toolkit's `cdi` mode: the unit that writes the CDI spec at boot (Kata's agent reads it to
 * give a container its GPUs) is run as systemd would, in the runtime's root. With a GPU it writes a
 * spec of nvidia.com/gpu devices; without one NVML must be what refused (the driver not loaded),
 * never a missing library.
 */
function cdiSpecCheck(unit: string): GuestCheck {
  return {
    name: 'cdi-spec',
    script: [
      `u=${G}/${unit}; [ -f $u ] || ${fail(`no /${unit} in the image`)}`,
      `c=$(sed -n 's/^ExecStart=//p' $u); f=$(echo "$c" | sed -n 's/.*--output[= ]\\([^ ]*\\).*/\\1/p'); [ -n "$c" ] && [ -n "$f" ] || ${fail(`/${unit} has no ExecStart with --output`)}`,
      `mkdir -p ${G}$(dirname $f); o=$(chroot ${G} $c 2>&1); r=$?`,
      `if [ $r -eq 0 ] && grep -q '^cdiVersion' ${G}$f && grep -q 'nvidia.com/gpu' ${G}$f; then echo "$c wrote $f, nvidia.com/gpu devices"; exit 0; fi`,
      `e=$(echo "$o" | grep -m1 -oE 'failed to initialize NVML: [A-Za-z_ ]+')`,
      `if [ $r -ne 0 ] && echo "$e" | grep -qE 'DRIVER_NOT_LOADED|Driver Not Loaded'; then echo "$c ran: $e (no NVIDIA GPU in this VM)"; else echo "$c: exit $r, $(echo "$o" | tail -n 2)"; exit 1; fi`,
    ].join('; '),
  };
}

/**
 * The NVIDIA guest's hook chain as Kata runs it: the runtime calls the prestart hook from
 * guest_hook_path, the hook runs nvidia-container-toolkit, which reads the container's
 * NVIDIA_VISIBLE_DEVICES and calls nvidia-container-cli (libnvidia-container). With a GPU the
 * container sees /dev/nvidiactl; without one libnvidia-container must be what refused.
 */
function hookChainCheck(hook: GuestHook, crun: (bundle: string, id: string, out: string) => string): GuestCheck {
  const err = `${G}/run/gg-hook-gpu.err`;
  return {
    name: 'oci-hook-chain',
    script: [
      `[ -x ${G}/${hook.path} ] || ${fail(`no executable hook /${hook.path} in the image`)}`,
      `cp /share/ctr/config-gpu.json ${G}${GPU_BUNDLE}/config.json || ${fail('cannot place the GPU bundle')}`,
      `${crun(GPU_BUNDLE, 'gg-verify-gpu', '/run/gg/ctr-gpu.out')}; r=$?`,
      `if [ $r -eq 0 ] && grep -q '^GG-CTR gpu ' /run/gg/ctr-gpu.out; then echo "the hook ran, the container sees /dev/nvidiactl"; exit 0; fi`,
      // what the hook printed: crun writes it to the annotation's file (or its own stderr)
      `h=$(cat ${err} /run/gg/ctr-gpu.out 2>/dev/null)`,
      `echo "$h" | grep -q 'nvidia-container-toolkit' || { echo "the prestart hook did not run nvidia-container-toolkit (crun exit $r)"; echo "$h" | tail -n 3; exit 1; }`,
      `e=$(echo "$h" | grep -m1 'nvidia-container-cli: ') || { echo "nvidia-container-toolkit did not reach nvidia-container-cli:"; echo "$h" | tail -n 3; exit 1; }`,
      `if [ $r -ne 0 ] && echo "$e" | grep -qE 'driver not loaded|no NVIDIA GPU'; then echo "runtime -> /${hook.path} -> nvidia-container-toolkit -> $e (no NVIDIA GPU in this VM)"; else echo "crun exit $r: $e"; exit 1; fi`,
    ].join('; '),
  };
}

/** Prints why and fails the check. */
function fail(what: string): string {
  return `{ echo ${quote(what)}; exit 1; }`;
}
