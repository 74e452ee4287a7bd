import type { HotplugSlots } from '../sys/qemu.js';
/** One check the guest runs; its result comes back on the serial console. */
export interface GuestCheck {
  name: string;
  /** Shell (busybox sh) that exits 0 on pass; what it prints becomes the detail. */
  script: string;
}

/** One shell word, whatever the text: every value the init script carries goes through here. */
export function quote(s: string): string {
  return `'${s.replace(/'/g, `'\\''`)}'`;
}

/**
 * The init of the boot check's initramfs: busybox mounts the image read-only at /mnt, runs each
 * check, prints `GG-CHECK <name> pass|fail <detail>` lines and powers off.
 */
export function verifyInit(checks: GuestCheck[], fsType: string): string {
  const lines = [
    '#!/bin/busybox sh',
    '/bin/busybox --install -s /bin',
    // the initramfs has /bin only; inside the chroot, modprobe's install commands need the guest's sbin
    'export PATH=/bin:/sbin:/usr/bin:/usr/sbin',
    'mkdir -p /proc /sys /dev /mnt /tmp',
    'mount -t proc proc /proc; mount -t sysfs sysfs /sys; mount -t devtmpfs devtmpfs /dev',
    'echo GG-BOOTED',
    `fs=${quote(fsType)}`,
    'if mount -t "$fs" -o ro /dev/vda /mnt; then echo "GG-CHECK image-mounts pass /dev/vda"; else echo "GG-CHECK image-mounts fail cannot mount /dev/vda as $fs"; fi',
    'mount -t proc proc /mnt/proc 2>/dev/null; mount -t sysfs sysfs /mnt/sys 2>/dev/null; mount --bind /dev /mnt/dev 2>/dev/null',
  ];
  for (const c of checks) {
    lines.push(`name=${quote(c.name)}; out=$( ( ${c.script} ) 2>&1 ); if [ $? -eq 0 ]; then r=pass; else r=fail; fi; echo "GG-CHECK $name $r $(echo $out | head -c 300)"`);
  }
  lines.push('echo GG-DONE', 'poweroff -f', 'sleep 5');
  return `${lines.join('\n')}\n`;
}

/**
 * Checks for a built guest: release, config options, driver modules, OCI hook. With NVIDIA's
 * driver: every module's vermagic is the release and its dependencies resolve; `nvidia` loads, or
 * fails only the way it must in a VM without an NVIDIA GPU (ENODEV, and NVRM says no GPU was
 * found); the GSP firmware of the version is there; nvidia-smi and libnvidia-ml are the modules'
 * version.
 */
export function guestChecks(o: { release: string; options: string[]; modules: string[]; loadNames?: Record<string, string>; signer?: string; hook?: string; driverVersion?: string; sigEnforced?: boolean }): GuestCheck[] {
  const checks: GuestCheck[] = [{ name: 'kernel-release', script: `r=$(uname -r); echo "$r"; [ "$r" = ${quote(o.release)} ]` }];
  for (const opt of o.options) {
    const unset = /^# (CONFIG_[A-Za-z0-9_]+) is not set$/.exec(opt);
    const script = unset ? `! zcat /proc/config.gz | grep -q '^${unset[1]}=' && echo off` : `zcat /proc/config.gz | grep -qxF ${quote(opt)} && echo on`;
    const symbol = unset ? unset[1]! : opt.split('=')[0]!;
    checks.push({ name: `config:${symbol}`, script });
  }
  let mainModule: string | undefined;
  for (const m of o.modules) {
    const file = m.split('/').pop()!.replace(/\.ko.*$/, '');
    // a distribution may rename the files and load them through modprobe install lines (nvidia-current → nvidia)
    const name = o.loadNames?.[file] ?? file;
    if (name === 'nvidia') mainModule = m;
    const path = `/lib/modules/${o.release}/${m}`;
    checks.push({ name: `module-present:${name}`, script: `test -f ${quote(`/mnt${path}`)} && echo ${quote(m)}` });
    checks.push({ name: `module-vermagic:${name}`, script: `v=$(chroot /mnt /sbin/modinfo -F vermagic ${quote(path)}); echo "$v"; case "$v" in ${quote(o.release)}' '*) true;; *) false;; esac` });
    if (o.signer) checks.push({ name: `module-signer:${name}`, script: `s=$(chroot /mnt /sbin/modinfo -F signer ${quote(path)}); echo "signer $s"; [ "$s" = ${quote(o.signer)} ]` });
    if (o.driverVersion && name !== 'nvidia') {
      // needs nvidia loaded, which a VM without an NVIDIA GPU cannot: its dependencies must resolve.
      // modules.dep itself, not modprobe --show-depends: kmod drops a dependency whose file is gone
      // (it prints an error and exits 0), so every file modules.dep names must be there
      const dir = `/mnt/lib/modules/${o.release}`;
      checks.push({
        name: `module-deps:${name}`,
        script: `d=$(awk -F: -v m=${quote(m)} '$1 == m { print $2; found = 1 } END { exit !found }' ${quote(`${dir}/modules.dep`)}) || { echo ${quote(`${m} is not in modules.dep (run depmod ${o.release})`)}; exit 1; }; for p in $d; do [ -f ${quote(dir)}/"$p" ] || { echo "missing: /lib/modules/${o.release}/$p"; exit 1; }; done; echo "needs:\${d:- nothing}"`,
      });
      continue;
    }
    const noGpu = o.driverVersion && name === 'nvidia'
      ? `elif echo "$out" | grep -q 'No such device' && dmesg | grep -q 'No NVIDIA GPU found'; then echo "loadable: every symbol resolved, no NVIDIA GPU in this VM (No such device)"; `
      : '';
    // /proc/modules spells the loaded module's name with underscores
    const loaded = [...new Set([name, file])].map((n) => `^${n.replace(/-/g, '_')} `).join('|');
    checks.push({
      name: `module-loads:${name}`,
      script: `m=${quote(name)}; out=$(chroot /mnt /sbin/modprobe "$m" 2>&1); if grep -qE ${quote(loaded)} /proc/modules; then echo loaded; ${noGpu}else echo "$out"; dmesg | grep -iE "$m|NVRM" | grep -vE 'Linux version|taints kernel|verification failed' | tail -n 4; false; fi`,
    });
  }
  if (o.signer && o.sigEnforced) {
    // MODULE_SIG_FORCE=y or module.sig_enforce=1: the kernel loads nothing unsigned or signed by another key
    checks.push({ name: 'module-sig-enforced', script: 'e=$(cat /sys/module/module/parameters/sig_enforce); echo "sig_enforce $e"; [ "$e" = Y ]' });
  }
  if (o.signer && mainModule) {
    // after modprobe nvidia: the kernel checked the signature against the certificate built into it
    checks.push({ name: 'module-signature-trusted', script: `if dmesg | grep -E 'module verification failed|Loading of module with unavailable key|Key was rejected'; then false; else echo "the kernel trusts ${o.signer.replace(/[^A-Za-z0-9 ._-]/g, '')}'s signatures"; fi` });
  }
  const v = o.driverVersion;
  if (v) {
    const nvidia = mainModule ? `/lib/modules/${o.release}/${mainModule}` : 'nvidia';
    checks.push({ name: 'driver-version', script: `m=$(chroot /mnt /sbin/modinfo -F version ${quote(nvidia)}); echo "nvidia $m"; [ "$m" = ${quote(v)} ]` });
    if (Number(v.split('.')[0]) >= 510) {
      const fw = `/lib/firmware/nvidia/${v}`;
      checks.push({ name: 'gsp-firmware', script: `f=$(ls ${quote(`/mnt${fw}`)} 2>/dev/null | grep -E '^gsp_.*\\.bin$' | tr '\\n' ' '); if [ -n "$f" ]; then echo "$f"; else echo ${quote(`no gsp_*.bin in ${fw}: the driver cannot boot a GSP GPU (Turing and newer)`)}; false; fi` });
    }
    // absolute paths inside the chroot: busybox's chroot would run its own applet for a bare "grep"
    const ml = `libnvidia-ml.so.${v}`;
    checks.push({
      name: 'nvidia-smi',
      script: [
        // resolved inside the chroot: a distribution links them absolutely, through /etc/alternatives
        `chroot /mnt /usr/bin/test -x /usr/bin/nvidia-smi || { echo "no /usr/bin/nvidia-smi"; exit 1; }`,
        `chroot /mnt /bin/grep -qaF ${quote(v)} /usr/bin/nvidia-smi || { echo "/usr/bin/nvidia-smi is not version ${v}"; exit 1; }`,
        `l=$(chroot /mnt /usr/bin/readlink -f /usr/lib/x86_64-linux-gnu/libnvidia-ml.so.1); l=\${l##*/}; [ "$l" = ${quote(ml)} ] || { echo "libnvidia-ml.so.1 -> $l, not ${ml}"; exit 1; }`,
        // it must run: without a GPU it fails only because no driver answers (exit 9)
        `o=$(chroot /mnt /usr/bin/nvidia-smi 2>&1); r=$?`,
        `if [ $r -eq 0 ] || echo "$o" | grep -q "couldn't communicate with the NVIDIA driver"; then echo "nvidia-smi ${v} runs, $l"; else echo "nvidia-smi exit $r: $o"; exit 1; fi`,
      ].join('; '),
    });
  }
  if (o.hook) checks.push({ name: 'oci-hook', script: `test -x ${quote(`/mnt/${o.hook}`)} && head -n 2 ${quote(`/mnt/${o.hook}`)} | tr '\\n' ' '` });
  return checks;
}

/**
 * Kata's GPU paths, proven from inside the guest: the host hot-plugs a device with a 64-bit
 * prefetchable BAR of `barBytes` once the guest says GG-HOTPLUG-READY. `root-port`: pciehp must
 * bring the root port's slot up and the (large) BAR be assigned above 4 GiB; `bridge`: ACPI hotplug
 * (acpiphp) must put the (small-BAR) device behind the PCI bridge with its BAR assigned. Then the
 * host unplugs it at GG-UNPLUG-READY and the device must go away cleanly. Markers go to
 * /dev/console, which the host reads; each wait is bounded.
 */
export function hotplugChecks(slots: HotplugSlots, barBytes: number): GuestCheck[] {
  const find = 'd=; for p in /sys/bus/pci/devices/*; do [ "$(cat $p/vendor)" = 0x1af4 ] && [ "$(cat $p/device)" = 0x1110 ] && d=$p; done';
  const mib = Math.round(barBytes / 2 ** 20);
  const name = slots === 'bridge' ? 'bridge' : 'pcie';
  const where = slots === 'bridge' ? 'the PCI bridge' : 'the root port';
  const enumerated =
    slots === 'bridge'
      ? [
          // the device's parent must be the bridge (class 0x0604), and the bridge's slots acpiphp's
          'b=$(readlink -f $d); b=${b%/*}; [ "$(cat $b/class 2>/dev/null)" = 0x060400 ] || { echo "${d##*/} is not behind a PCI bridge (parent ${b##*/})"; exit 1; }',
          `dmesg | grep -qE 'acpiphp: Slot \\[' || { echo "\${d##*/} appeared, but acpiphp registered no slot"; exit 1; }`,
        ]
      : [`dmesg | grep -qE 'pciehp.*Slot\\(1\\).*(Card present|Link Up)' || { echo "\${d##*/} appeared, but pciehp did not report the slot up"; exit 1; }`];
  // above 4 GiB for the large BAR a root port's 64-bit window holds; the small one anywhere assigned
  const placed = slots === 'bridge' ? '' : ' && [ $s -ge $((0x100000000)) ]';
  return [
    {
      name: `${name}-hotplug`,
      script: [
        'printf "\\nGG-HOTPLUG-READY\\n" > /dev/console',
        `i=0; while [ $i -lt 240 ]; do ${find}; [ -n "$d" ] && break; sleep 0.5; i=$((i+1)); done`,
        `[ -n "$d" ] || { echo "no device appeared behind ${where} within 120 s:"; dmesg | grep -iE 'pciehp|acpiphp|1af4:1110' | tail -n 3; exit 1; }`,
        ...enumerated,
        'set -- $(sed -n 3p $d/resource); s=$(($1)); e=$(($2)); f=$(($3))',
        `[ $s -ne 0 ] || { echo "\${d##*/}: BAR2 was not assigned"; dmesg | grep -iE 'BAR 2|no space' | tail -n 3; exit 1; }`,
        'm=$(( (e - s + 1) >> 20 )); [ $m -ge 1024 ] && size="$((m >> 10)) GiB" || size="$m MiB"',
        `echo "\${d##*/} BAR2 $1-$2 ($size, prefetchable $(( (f >> 13) & 1 )))"`,
        `[ $m -eq ${mib} ]${placed} && [ $(( (f >> 13) & 1 )) -eq 1 ]`,
      ].join('; '),
    },
    {
      name: `${name}-hot-unplug`,
      script: [
        `${find}; [ -n "$d" ] || { echo "nothing to unplug"; exit 1; }`,
        'printf "\\nGG-UNPLUG-READY\\n" > /dev/console',
        // pciehp waits 5 s after the attention button before it powers the slot off
        'i=0; while [ -e "$d" ] && [ $i -lt 120 ]; do sleep 0.5; i=$((i+1)); done',
        '[ ! -e "$d" ] && echo "${d##*/} removed" || { echo "${d##*/} still present after 60 s"; exit 1; }',
      ].join('; '),
    },
  ];
}

export interface CheckResult {
  name: string;
  /** True for a skipped check too: skipping is not a failure. */
  pass: boolean;
  detail: string;
  /** Not run, for the reason in detail (the topology or the host lacks what it needs). */
  skipped?: boolean;
}

/** Reads the GG-CHECK lines back; a check that never reported counts as failed. */
export function parseChecks(console: string, expected: string[]): CheckResult[] {
  const found = new Map<string, CheckResult>();
  for (const m of console.matchAll(/^GG-CHECK (\S+) (pass|fail) ?(.*?)\r?$/gm)) found.set(m[1]!, { name: m[1]!, pass: m[2] === 'pass', detail: m[3]!.trim() });
  return ['image-mounts', ...expected].map((name) => found.get(name) ?? { name, pass: false, detail: 'no result (the guest did not get this far)' });
}
