import { spawn } from 'node:child_process';
import { createWriteStream } from 'node:fs';
import { GuestError } from '../model/errors.js';
import { qmp } from './qmp.js';

export interface BootOptions {
  kernel: string;
  initrd: string;
  /** Attached read-only as virtio-blk (/dev/vda). */
  disk?: string;
  append: string;
  /** tcg (software, the default) or kvm. */
  accel: 'tcg' | 'kvm';
  machine: 'q35' | 'pc';
  /**
   * q35: where devices are hot-plugged, as Kata's configuration places them: `root-port` (the
   * default), a PCIe root port with native hotplug (pcie_root_port = 1, large BARs); `bridge`, a
   * PCI bridge with ACPI hotplug (hotplug_vfio_on_root_bus = false, small BARs).
   */
  slots?: HotplugSlots;
  memoryMiB: number;
  timeoutMs: number;
  /** The serial console goes here. */
  logFile: string;
  signal?: AbortSignal;
  /** Stop early once the console shows this. */
  doneMarker: RegExp;
  /**
   * Hot-plug a device with a GPU-like BAR into the hotplug slot (`slots`) when the guest asks for it
   * (the console shows GG-HOTPLUG-READY) and unplug it at GG-UNPLUG-READY, through QEMU's monitor
   * (q35 only).
   */
  hotplug?: BarHotplug;
  /** A host folder shared read-only over virtio 9p under this mount tag (how Kata shares a container's files without virtio-fs). */
  share?: { dir: string; tag: string };
  /**
   * A virtio-fs share served by a virtiofsd listening on `socket` (vhost-user-fs-pci; the guest's
   * memory becomes a shared memfd, which vhost-user needs).
   */
  virtiofs?: { socket: string; tag: string };
  /** A vsock with this guest CID (vhost-vsock-pci: needs the host's /dev/vhost-vsock). */
  vsockCid?: number;
}

export type HotplugSlots = 'root-port' | 'bridge';

/** ivshmem-plain on a sparse memory-backend-file: a 64-bit prefetchable BAR of any power-of-two size, like a GPU's. */
export interface BarHotplug {
  /** The monitor's unix socket. */
  qmpSocket: string;
  /** The file behind the BAR (sparse; never written). */
  memPath: string;
  barBytes: number;
}

/** The root port's prefetchable window that firmware reserves for a hot-plugged device's BARs (Kata sizes it from the GPU's). */
export const ROOT_PORT_PREF64_GIB = 32;

/** The PCI bridge's prefetchable window for a small-BAR device (below 4 GiB, as such GPUs' BAR1). */
export const BRIDGE_PREF64_MIB = 512;

/** The QEMU arguments of the hotplug topology: a root port pciehp owns, or a bridge ACPI hotplug serves. */
function slotArgs(slots: HotplugSlots): string[] {
  if (slots === 'bridge') {
    return ['-global', 'ICH9-LPC.acpi-pci-hotplug-with-bridge-support=on', '-device', `pci-bridge,id=hp,bus=pcie.0,chassis_nr=1,shpc=off,pref64-reserve=${BRIDGE_PREF64_MIB}M`];
  }
  // ACPI hotplug off, so that the guest's pciehp owns the root port natively
  return ['-global', 'ICH9-LPC.acpi-pci-hotplug-with-bridge-support=off', '-device', `pcie-root-port,id=hp,chassis=1,slot=1,pref64-reserve=${ROOT_PORT_PREF64_GIB}G`];
}

/** Boots a kernel in QEMU with its serial console captured; always bounded in time. */
export function bootGuest(o: BootOptions): Promise<{ console: string; timedOut: boolean }> {
  const args = [
    '-accel', o.accel, '-machine', o.virtiofs ? `${o.machine},memory-backend=gg-mem` : o.machine, '-m', String(o.memoryMiB), '-smp', '1',
    ...(o.virtiofs
      ? ['-object', `memory-backend-memfd,id=gg-mem,size=${o.memoryMiB}M,share=on`, '-chardev', `socket,id=gg-vfs,path=${o.virtiofs.socket}`, '-device', `vhost-user-fs-pci,chardev=gg-vfs,tag=${o.virtiofs.tag}`]
      : []),
    '-nodefaults', '-no-user-config', '-display', 'none', '-serial', 'stdio', '-no-reboot',
    '-kernel', o.kernel, '-initrd', o.initrd, '-append', o.append,
    ...(o.disk ? ['-drive', `file=${o.disk},format=raw,if=virtio,readonly=on`] : []),
    // the slot a GPU would be hot-plugged into (q35 only)
    ...(o.machine === 'q35' ? slotArgs(o.slots ?? 'root-port') : []),
    ...(o.share ? ['-fsdev', `local,id=gg-share,path=${o.share.dir},security_model=none,readonly=on`, '-device', `virtio-9p-pci,fsdev=gg-share,mount_tag=${o.share.tag}`] : []),
    ...(o.vsockCid ? ['-device', `vhost-vsock-pci,guest-cid=${o.vsockCid}`] : []),
    ...(o.hotplug ? ['-qmp', `unix:${o.hotplug.qmpSocket},server=on,wait=off`] : []),
  ];
  return new Promise((resolve, reject) => {
    const log = createWriteStream(o.logFile);
    log.write(`$ qemu-system-x86_64 ${args.join(' ')}\n`);
    const child = spawn('qemu-system-x86_64', args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    let timedOut = false;
    const stop = () => child.kill('SIGKILL');
    const timer = setTimeout(() => {
      timedOut = true;
      stop();
    }, o.timeoutMs);
    o.signal?.addEventListener('abort', stop, { once: true });
    const stage = { plugged: false, unplugged: false };
    const monitor = (what: string, commands: Parameters<typeof qmp>[1]) => {
      log.write(`\n[gpu-guest] ${what} through QEMU's monitor\n`);
      qmp(o.hotplug!.qmpSocket, commands).catch((err: Error) => log.write(`\n[gpu-guest] ${what} failed: ${err.message}\n`));
    };
    const take = (d: string) => {
      output += d;
      log.write(d);
      if (o.hotplug && !stage.plugged && /^GG-HOTPLUG-READY/m.test(output)) {
        stage.plugged = true;
        const h = o.hotplug;
        monitor(`hot-plug ivshmem-plain with a ${Math.round(h.barBytes / 2 ** 20)} MiB BAR into the ${o.slots ?? 'root-port'}`, [
          { execute: 'object-add', arguments: { 'qom-type': 'memory-backend-file', id: 'gg-bar', 'mem-path': h.memPath, size: h.barBytes, share: true } },
          { execute: 'device_add', arguments: { driver: 'ivshmem-plain', memdev: 'gg-bar', bus: 'hp', id: 'gg-dev' } },
        ]);
      }
      if (o.hotplug && !stage.unplugged && /^GG-UNPLUG-READY/m.test(output)) {
        stage.unplugged = true;
        monitor('hot-unplug the device', [{ execute: 'device_del', arguments: { id: 'gg-dev' } }]);
      }
      if (o.doneMarker.test(output)) setTimeout(stop, 200);
    };
    // decoded as a stream: a character split between two reads must not become two U+FFFD
    child.stdout.setEncoding('utf8').on('data', take);
    child.stderr.setEncoding('utf8').on('data', take);
    child.on('error', (err: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      reject(new GuestError('E_MISSING_TOOL', `cannot run qemu-system-x86_64: ${err.message} (apt-get install qemu-system-x86)`));
    });
    child.on('close', () => {
      clearTimeout(timer);
      o.signal?.removeEventListener('abort', stop);
      log.end();
      if (o.signal?.aborted) reject(new GuestError('E_INTERRUPTED', 'boot check interrupted'));
      else resolve({ console: output, timedOut });
    });
  });
}
