import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, readlinkSync, rmSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { GuestError, isGuestError, messageOf } from '../model/errors.js';
import { processAlive } from './process.js';
import { runLogged, type RunOptions } from './exec.js';
import { mountsUnder } from './mounts.js';
import type { StepLog } from '../model/step.js';
import { proxyEnvironment } from './proxy.js';

/** The seed procedure's mounts, in mount order; unmounted in reverse. */
const SEED_MOUNTS: { target: string; commands: string[][] }[] = [
  { target: 'sys', commands: [['-t', 'sysfs', '-o', 'ro,nosuid,nodev,noexec', 'sysfs']] },
  { target: 'proc', commands: [['-t', 'proc', '-o', 'ro,nosuid,nodev,noexec', 'proc']] },
  { target: 'tmp', commands: [['-t', 'tmpfs', '-o', 'mode=1777,nosuid,nodev', 'tmpfs']] },
  { target: 'dev', commands: [['--bind', '/dev'], ['-o', 'remount,bind,ro']] },
  { target: 'dev/pts', commands: [['-t', 'devpts', '-o', 'newinstance,ptmxmode=0666,mode=620,gid=5', 'devpts']] },
];

/** The only environment commands inside the chroot see (with the host's proxy variables, for apt). */
export const CHROOT_ENV: NodeJS.ProcessEnv = {
  PATH: '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin',
  DEBIAN_FRONTEND: 'noninteractive',
  LC_ALL: 'C',
  LANG: 'C',
  HOME: '/root',
  TERM: 'dumb',
};

export interface ChrootSession {
  root: string;
  /** Runs a command inside the chroot with the clean environment; output goes to the task log. */
  run(cmd: string, args: string[], opts?: Pick<RunOptions, 'capture' | 'input' | 'explain' | 'okStatus'> & { cwd?: string }): Promise<string>;
  /** Stops what still runs inside, unmounts in reverse order, and proves nothing is left mounted. */
  close(): Promise<void>;
}

interface SessionState {
  pid: number;
  root: string;
  mounts: string[];
}

function stateDir(cacheDir: string): string {
  return join(cacheDir, 'chroot-sessions');
}

/** A recorded chroot session: the process that opened it, whether it still runs, its record file. */
export interface RecordedSession extends SessionState {
  file: string;
  alive: boolean;
}

/** The chroot sessions recorded under a cache (unreadable records are skipped). */
export function recordedSessions(cacheDir: string): RecordedSession[] {
  const dir = stateDir(cacheDir);
  if (!existsSync(dir)) return [];
  const sessions: RecordedSession[] = [];
  for (const name of readdirSync(dir)) {
    try {
      const state = JSON.parse(readFileSync(join(dir, name), 'utf8')) as SessionState;
      sessions.push({ ...state, file: join(dir, name), alive: processAlive(state.pid) });
    } catch {
      // a record being written or damaged: not a session we can act on
    }
  }
  return sessions;
}

/**
 * Finds sessions of processes that no longer exist (killed outright, power loss), unmounts what
 * they left, and returns one line per mount removed so the caller can say so.
 */
export function recoverStaleMounts(cacheDir: string): string[] {
  const removed: string[] = [];
  for (const state of recordedSessions(cacheDir).filter((s) => !s.alive)) {
    for (const point of mountsUnder(state.root)) {
      unmount(point);
      removed.push(`${point} (left by process ${state.pid})`);
    }
    if (mountsUnder(state.root).length === 0) rmSync(state.file, { force: true });
  }
  return removed;
}

function unmount(point: string): void {
  try {
    execFileSync('umount', [point], { stdio: 'ignore' });
  } catch {
    // still busy: detach it, so it is gone from the tree even if a process holds it
    execFileSync('umount', ['-l', point], { stdio: 'ignore' });
  }
}

/** Kills processes whose root is inside the chroot (daemons a postinst started, such as gpg-agent). */
function killChrootProcesses(root: string): number {
  let killed = 0;
  for (const pid of readdirSync('/proc').filter((p) => /^\d+$/.test(p))) {
    try {
      const procRoot = readlinkSync(`/proc/${pid}/root`);
      if (procRoot === root || procRoot.startsWith(`${root}/`)) {
        process.kill(Number(pid), 'SIGKILL');
        killed++;
      }
    } catch {
      // gone, or not ours to read
    }
  }
  return killed;
}

/** Mounts the seed set under root and records it, so a later run can clean up after a SIGKILL. */
export async function openChroot(rootDir: string, ctx: { log: StepLog; cacheDir: string; signal: AbortSignal }): Promise<ChrootSession> {
  const root = resolve(rootDir);
  for (const line of recoverStaleMounts(ctx.cacheDir)) ctx.log.info(`removed a stale mount: ${line}`);
  const already = mountsUnder(root);
  if (already.length) throw new GuestError('E_MOUNT_LEAK', `cannot enter ${root}: something is already mounted below it`, { details: already });
  mkdirSync(stateDir(ctx.cacheDir), { recursive: true });
  const stateFile = join(stateDir(ctx.cacheDir), `${process.pid}-${Date.now()}.json`);
  const mounted: string[] = [];
  // record the intended mounts before mounting: a kill between mount and record must not leak
  writeFileSync(stateFile, JSON.stringify({ pid: process.pid, root, mounts: SEED_MOUNTS.map((m) => join(root, m.target)) } satisfies SessionState));
  let closed = false;
  const close = async () => {
    if (closed) return;
    closed = true;
    const killed = killChrootProcesses(root);
    if (killed) ctx.log.info(`stopped ${killed} process(es) still running in the chroot`);
    for (const point of [...mounted].reverse()) {
      try {
        unmount(point);
      } catch (err) {
        ctx.log.info(`umount ${point} failed: ${(err as Error).message}`);
      }
    }
    const left = mountsUnder(root);
    if (left.length) throw new GuestError('E_MOUNT_LEAK', `${left.length} mount(s) still under ${root} after leaving the chroot (unmount them by hand: umount -R ${root})`, { details: left });
    rmSync(stateFile, { force: true });
  };
  try {
    for (const m of SEED_MOUNTS) {
      const target = join(root, m.target);
      mkdirSync(target, { recursive: true });
      for (const [i, args] of m.commands.entries()) {
        await runLogged(ctx.log, 'mount', [...args, target]);
        // mounted from the first command on: a bind whose read-only remount fails is still a mount
        if (i === 0) mounted.push(target);
      }
    }
  } catch (err) {
    // the mount that failed is what the user must see; a leak found while undoing the others
    // is reported with it, never instead of it
    try {
      await close();
    } catch (closeErr) {
      throw new GuestError('E_MOUNT_LEAK', `${messageOf(err)}; and while undoing the mounts: ${messageOf(closeErr)}`, { cause: err, details: isGuestError(closeErr) ? closeErr.details : [] });
    }
    throw err;
  }
  return {
    root,
    // a working folder inside the chroot through env --chdir: no shell, the values stay argv
    run: (cmd, args, { cwd, ...opts } = {}) => runLogged(ctx.log, 'chroot', [root, ...(cwd ? ['env', `--chdir=${cwd}`] : []), cmd, ...args], { ...opts, env: { ...CHROOT_ENV, ...proxyEnvironment() }, signal: ctx.signal }),
    close,
  };
}

/** Opens a session, runs fn, and always closes it — on success, failure and abort alike. */
export async function withChroot<T>(rootDir: string, ctx: { log: StepLog; cacheDir: string; signal: AbortSignal }, fn: (s: ChrootSession) => Promise<T>): Promise<T> {
  const session = await openChroot(rootDir, ctx);
  let result: T;
  try {
    result = await fn(session);
  } catch (err) {
    await session.close().catch((closeErr) => ctx.log.info(`while cleaning up: ${(closeErr as Error).message}`));
    throw err;
  }
  await session.close();
  return result;
}

/** The packages dpkg has installed in a chroot, `name` → `version`. */
export async function installedPackages(chroot: ChrootSession): Promise<Map<string, string>> {
  const listed = await chroot.run('dpkg-query', ['-W', '-f=${db:Status-Abbrev}\\t${Package}\\t${Version}\\n'], { capture: true });
  return new Map(listed.split('\n').map((l) => l.split('\t')).filter(([status, name]) => status?.startsWith('ii') && name).map(([, name, version]) => [name!, version!]));
}
