import { spawn } from 'node:child_process';
import { GuestError } from '../model/errors.js';
import type { StepLog } from '../model/step.js';

export interface RunOptions {
  cwd?: string;
  env?: NodeJS.ProcessEnv;
  /** Aborting kills the whole process group (make's compilers too): SIGTERM, then SIGKILL. */
  signal?: AbortSignal;
  /** Text written to the process's stdin. */
  input?: string;
  /** Keep stdout in memory and return it (still logged). */
  capture?: boolean;
  /** Picks lines worth showing when the command fails (compiler errors …). */
  explain?: (tail: string[]) => string[];
  /** Keep stdout out of the log (a tool that echoes thousands of commands); stderr is still logged. */
  quiet?: boolean;
  /** Exit statuses that count as success. Default [0]. */
  okStatus?: number[];
}

const KILL_GRACE_MS = 5000;

/**
 * Runs a command with its output going to the task log. We spawn directly rather than through zx
 * because a kernel build must be stoppable as a process group, and output must stream to the log.
 */
export function runLogged(log: StepLog, cmd: string, args: string[], opts: RunOptions = {}): Promise<string> {
  const shown = [cmd, ...args].join(' ');
  log.info(`$ ${shown}`);
  return new Promise((resolvePromise, reject) => {
    if (opts.signal?.aborted) return reject(interrupted(shown));
    const child = spawn(cmd, args, {
      cwd: opts.cwd,
      env: opts.env ?? process.env,
      detached: true,
      stdio: [opts.input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'],
    });
    let stdout = '';
    let killTimer: NodeJS.Timeout | undefined;
    const onAbort = () => {
      killGroup(child.pid, 'SIGTERM');
      killTimer = setTimeout(() => killGroup(child.pid, 'SIGKILL'), KILL_GRACE_MS);
    };
    opts.signal?.addEventListener('abort', onAbort, { once: true });
    child.stdout!.on('data', (d: Buffer) => {
      if (opts.capture) stdout += d.toString();
      if (!opts.quiet) log.write(d);
    });
    child.stderr!.on('data', (d: Buffer) => log.write(d));
    if (opts.input !== undefined) child.stdin!.end(opts.input);
    child.on('error', (err: NodeJS.ErrnoException) => {
      opts.signal?.removeEventListener('abort', onAbort);
      const hint = err.code === 'ENOENT' ? ` (${cmd} is not installed: run gpu-guest doctor)` : '';
      reject(new GuestError('E_MISSING_TOOL', `cannot run ${cmd}: ${err.message}${hint}`, { cause: err }));
    });
    child.on('close', (code, sig) => {
      opts.signal?.removeEventListener('abort', onAbort);
      if (killTimer) clearTimeout(killTimer);
      if (opts.signal?.aborted) return reject(interrupted(shown));
      if (code !== null && (opts.okStatus ?? [0]).includes(code)) return resolvePromise(stdout);
      const status = code === null ? `was killed by ${sig}` : `exited with status ${code}`;
      const details = opts.explain ? opts.explain(log.tail(400)) : [];
      reject(new GuestError('E_COMMAND_FAILED', `${shown.length > 120 ? shown.slice(0, 117) + '...' : shown} ${status} (see the task log)`, { details }));
    });
  });
}

function interrupted(shown: string): GuestError {
  return new GuestError('E_INTERRUPTED', `interrupted: ${shown.slice(0, 80)}`);
}

function killGroup(pid: number | undefined, sig: NodeJS.Signals): void {
  if (!pid) return;
  try {
    process.kill(-pid, sig);
  } catch {
    // the group is already gone
  }
}
