import { randomBytes } from 'node:crypto';
import { BUNDLE, HOSTNAME, ID_BASE, LIMITS, SHARE_TAG, VIRTIOFS_TAG, type GuestHook } from './verify-share.js';
import { quote, type CheckResult, type GuestCheck } from './verify-init.js';
import type { OptionValue } from '../sys/kconfig/options.js';

// The guest's side of verify's container checks: what the kernel needs, and the checks that mount
// the shares and run the containers the way Kata's agent does.

/** What virtio-fs needs of the guest kernel besides CONTAINER_NEEDS. */
export const VIRTIOFS_NEEDS = ['FUSE_FS', 'VIRTIO_FS'];

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

/** The checks the container share enables, in the order the guest runs them; then the toolkit's. */
export const CONTAINER_CHECKS = ['share-9p', 'share-virtiofs', 'erofs-mount', 'overlay-mount', 'cgroup2', 'container-run', 'container-namespaces', 'container-cgroup-limits', 'container-seccomp'];

/** The check of the NVIDIA toolkit's mode: the prestart hook chain, or the CDI spec. */
export function toolkitCheck(mode: 'oci-hook' | 'cdi' | undefined): string[] {
  return mode === 'oci-hook' ? ['oci-hook-chain'] : mode === 'cdi' ? ['cdi-spec'] : [];
}

/** The options of `needs` (default CONTAINER_NEEDS) a built kernel config (parseDotConfig's) does not build in. */
export function missingContainerOptions(config: Map<string, OptionValue>, needs = CONTAINER_NEEDS): string[] {
  return needs.filter((o) => config.get(o) !== 'y').map((o) => `CONFIG_${o}`);
}

/**
 * The container checks of a kernel that lacks what they need, reported without a boot: skipped
 * for the minimal profile (the smallest guest, chosen knowingly), failed for any other kernel,
 * naming the options it lacks.
 */
export function containerChecksNotRun(names: string[], missing: string[], minimalProfile: boolean): CheckResult[] {
  const lacks = `the kernel lacks ${missing.join(', ')}`;
  const detail = minimalProfile
    ? `${lacks} (kernel.profile: minimal; the kata profile runs containers)`
    : `${lacks}: Kata cannot share or run a container in this guest (use kernel.profile: kata, or add them to a fragment)`;
  return names.map((name) => ({ name, pass: minimalProfile, ...(minimalProfile ? { skipped: true } : {}), detail }));
}

/**
 * Kata's agent talks to the host over vsock. QEMU can give the guest one only where the host has
 * /dev/vhost-vsock; the guest's virtio transport must then bind it. Returns the check with the CID
 * to give QEMU, or why it cannot run.
 */
export function vsockCheck(config: Map<string, OptionValue>, hostHasVsock: boolean): { check: GuestCheck; cid: number } | { why: string } {
  if (!hostHasVsock) return { why: 'this host has no /dev/vhost-vsock (modprobe vhost_vsock; a VM or container host may not offer it): QEMU cannot give the guest a vsock' };
  if (config.get('VIRTIO_VSOCKETS') !== 'y') return { why: 'the kernel lacks CONFIG_VIRTIO_VSOCKETS' };
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

/** In the guest: the runtime's root (the image under a tmpfs overlay), the GPU bundle, the runtime. */
const G = '/run/gg/guest';
const GPU_BUNDLE = '/run/gg-ctr-gpu';
const RUNTIME = '/run/gg-rt';

/** The guest's side: mounts the share, an erofs layer, the overlays, cgroup2; runs the containers. */
export function containerChecks(o: { marker: string; hook?: GuestHook; cdiUnit?: string; virtiofs?: boolean }): GuestCheck[] {
  const line = (what: string) => `sed -n "s/^GG-CTR ${what} //p" /run/gg/ctr.out | head -n 1`;
  const checks: GuestCheck[] = [
    shareCheck('share-9p', '9p', '-t 9p -o trans=virtio,version=9p2000.L,ro', SHARE_TAG, '/share', o.marker),
    ...(o.virtiofs ? [shareCheck('share-virtiofs', 'virtio-fs', '-t virtiofs', VIRTIOFS_TAG, '/vfs', o.marker)] : []),
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
        // the container's files come over virtio-fs where the guest has it (Kata's default), else 9p
        `S=/share; t=9p; if grep -q ' /vfs virtiofs ' /proc/mounts; then S=/vfs; t=virtio-fs; fi`,
        `mount -t overlay overlay -o lowerdir=$S/ctr/rootfs,upperdir=/run/gg/cu,workdir=/run/gg/cw ${G}${BUNDLE}/rootfs || { echo "cannot mount an overlay with the $t share as its lower layer"; exit 1; }`,
        `echo upper > ${G}${BUNDLE}/rootfs/gg/upper && [ ! -e $S/ctr/rootfs/gg/upper ] && [ -x ${G}${BUNDLE}/rootfs/bin/busybox ] || ${fail('the overlay does not write to its upper layer alone')}`,
        `echo "the container's rootfs: the $t share under a tmpfs overlay; the runtime's root: the image under one"`,
      ].join('; '),
    },
    {
      name: 'cgroup2',
      script: [
        `mount -t proc proc ${G}/proc && mount -t sysfs sysfs ${G}/sys && mount -t devtmpfs devtmpfs ${G}/dev || ${fail('cannot mount proc, sysfs and devtmpfs for the runtime')}`,
        `mount -t cgroup2 -o nsdelegate cgroup2 ${G}/sys/fs/cgroup || ${fail("cannot mount cgroup2 (nsdelegate, as Kata's agent does)")}`,
        `c=$(cat ${G}/sys/fs/cgroup/cgroup.controllers); for k in cpu memory pids; do case " $c " in *" $k "*) ;; *) echo "cgroup2 has no $k controller (it has: $c)"; exit 1;; esac; done`,
        'echo "cgroup2 controllers: $c"',
      ].join('; '),
    },
    {
      name: 'container-run',
      script: [
        `mount --bind /share/runtime ${G}${RUNTIME} && cp /share/ctr/config.json ${G}${BUNDLE}/ || ${fail('cannot place the runtime and the bundle')}`,
        `v=$(chroot ${G} ${RUNTIME}/ld.so --library-path ${RUNTIME}/lib ${RUNTIME}/crun --version | head -n 1)`,
        `${runContainer(BUNDLE, 'gg-verify', '/run/gg/ctr.out')}; r=$?`,
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
  if (o.hook) checks.push(hookChainCheck(o.hook));
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
function hookChainCheck(hook: GuestHook): GuestCheck {
  const err = `${G}/run/gg-hook-gpu.err`;
  return {
    name: 'oci-hook-chain',
    script: [
      `[ -x ${G}/${hook.path} ] || ${fail(`no executable hook /${hook.path} in the image`)}`,
      `cp /share/ctr/config-gpu.json ${G}${GPU_BUNDLE}/config.json || ${fail('cannot place the GPU bundle')}`,
      `${runContainer(GPU_BUNDLE, 'gg-verify-gpu', '/run/gg/ctr-gpu.out')}; r=$?`,
      `if [ $r -eq 0 ] && grep -q '^GG-CTR gpu ' /run/gg/ctr-gpu.out; then echo "the hook ran, the container sees /dev/nvidiactl"; exit 0; fi`,
      // what the hook printed: crun writes it to the annotation's file (or its own stderr)
      `h=$(cat ${err} /run/gg/ctr-gpu.out 2>/dev/null)`,
      `echo "$h" | grep -q 'nvidia-container-toolkit' || { echo "the prestart hook did not run nvidia-container-toolkit (crun exit $r)"; echo "$h" | tail -n 3; exit 1; }`,
      `e=$(echo "$h" | grep -m1 'nvidia-container-cli: ') || { echo "nvidia-container-toolkit did not reach nvidia-container-cli:"; echo "$h" | tail -n 3; exit 1; }`,
      `if [ $r -ne 0 ] && echo "$e" | grep -qE 'driver not loaded|no NVIDIA GPU'; then echo "runtime -> /${hook.path} -> nvidia-container-toolkit -> $e (no NVIDIA GPU in this VM)"; else echo "crun exit $r: $e"; exit 1; fi`,
    ].join('; '),
  };
}

/**
 * `crun run` of a bundle, its output into `out`. The runtime's root is made the root of a mount
 * namespace of its own, as switch_root does, not a chroot: the kernel refuses a user namespace to
 * a chrooted process (clone: EPERM).
 */
function runContainer(bundle: string, id: string, out: string): string {
  return `unshare -m --propagation private sh -c 'cd ${G} && mount --move . / && exec chroot . ${RUNTIME}/ld.so --library-path ${RUNTIME}/lib ${RUNTIME}/crun --root /run/gg-crun run --bundle ${bundle} ${id}' > ${out} 2>&1`;
}

/** Mounts the host's share (by its tag) at `dir` and reads the host's marker back. */
function shareCheck(name: string, what: string, mountArgs: string, tag: string, dir: string, marker: string): GuestCheck {
  return {
    name,
    script: `mkdir -p ${dir} && mount ${mountArgs} ${tag} ${dir} || ${fail(`cannot mount the ${what} share ${tag}`)}; [ "$(cat ${dir}/MARKER)" = ${quote(marker)} ] || ${fail(`the ${what} share does not hold the marker the host wrote`)}; echo "${what} share ${tag} mounted, marker read back"`,
  };
}

/** Prints why and fails the check. */
function fail(what: string): string {
  return `{ echo ${quote(what)}; exit 1; }`;
}
