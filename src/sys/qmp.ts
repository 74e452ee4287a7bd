import { createConnection } from 'node:net';
import { GuestError } from '../model/errors.js';

/**
 * Sends QMP commands to a running QEMU over its unix socket, one after another, and resolves with
 * their answers; a command QEMU refuses rejects with QEMU's own error text.
 */
export function qmp(socket: string, commands: { execute: string; arguments?: Record<string, unknown> }[], timeoutMs = 30_000): Promise<unknown[]> {
  return new Promise((resolve, reject) => {
    const conn = createConnection(socket);
    const answers: unknown[] = [];
    let buffer = '';
    let next = -1; // -1: waiting for QEMU's greeting, then qmp_capabilities
    const all = [{ execute: 'qmp_capabilities' }, ...commands];
    const fail = (err: Error) => {
      clearTimeout(timer);
      conn.destroy();
      reject(err);
    };
    const timer = setTimeout(() => fail(new GuestError('E_BOOT_TIMEOUT', `QEMU's monitor ${socket} did not answer ${all[Math.max(next, 0)]?.execute ?? 'its greeting'} within ${timeoutMs / 1000} s`)), timeoutMs);
    const send = () => {
      next++;
      if (next === all.length) {
        clearTimeout(timer);
        conn.end();
        resolve(answers.slice(1));
        return;
      }
      conn.write(`${JSON.stringify(all[next])}\n`);
    };
    conn.on('data', (d) => {
      buffer += d.toString();
      let nl: number;
      while ((nl = buffer.indexOf('\n')) >= 0) {
        const line = buffer.slice(0, nl).trim();
        buffer = buffer.slice(nl + 1);
        if (!line) continue;
        const msg = JSON.parse(line) as { QMP?: unknown; return?: unknown; error?: { desc: string }; event?: string };
        if (msg.event) continue;
        if (msg.QMP) send();
        else if (msg.error) fail(new GuestError('E_VERIFY_FAILED', `QEMU refused ${all[next]!.execute}: ${msg.error.desc}`));
        else if ('return' in msg) {
          answers.push(msg.return);
          send();
        }
      }
    });
    conn.on('error', (err) => fail(new GuestError('E_VERIFY_FAILED', `cannot reach QEMU's monitor ${socket}: ${err.message}`)));
  });
}
