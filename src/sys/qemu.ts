import { spawn } from 'node:child_process';
import { createWriteStream } from 'node:fs';
import { GuestError } from '../model/errors.js';

export interface BootOptions {
  kernel: string;
  initrd: string;
  /** Attached read-only as virtio-blk (/dev/vda). */
  disk?: string;
  append: string;
  /** tcg (software, the default) or kvm. */
  accel: 'tcg' | 'kvm';
  machine: 'q35' | 'pc';
  memoryMiB: number;
  timeoutMs: number;
  /** The serial console goes here. */
  logFile: string;
  signal?: AbortSignal;
  /** Stop early once the console shows this. */
  doneMarker: RegExp;
}

/** Boots a kernel in QEMU with its serial console captured; always bounded in time. */
export function bootGuest(o: BootOptions): Promise<{ console: string; timedOut: boolean }> {
  const args = [
    '-accel', o.accel, '-machine', o.machine, '-m', String(o.memoryMiB), '-smp', '1',
    '-nodefaults', '-no-user-config', '-display', 'none', '-serial', 'stdio', '-no-reboot',
    '-kernel', o.kernel, '-initrd', o.initrd, '-append', o.append,
    ...(o.disk ? ['-drive', `file=${o.disk},format=raw,if=virtio,readonly=on`] : []),
    // a PCIe root port that pciehp can own, as a GPU would be hot-plugged into (q35 only)
    ...(o.machine === 'q35' ? ['-global', 'ICH9-LPC.acpi-pci-hotplug-with-bridge-support=off', '-device', 'pcie-root-port,id=rp1,chassis=1,slot=1'] : []),
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
    const take = (d: Buffer) => {
      output += d.toString();
      log.write(d);
      if (o.doneMarker.test(output)) setTimeout(stop, 200);
    };
    child.stdout.on('data', take);
    child.stderr.on('data', take);
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
