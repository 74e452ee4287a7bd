import { existsSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { GuestError } from '../model/errors.js';
import { canonicalJson, type Json, type JsonObject } from '../model/json.js';
import type { ResolveContext, StepRegistry } from '../model/step.js';
import type { TaskGraph, TaskSpec } from '../model/task.js';

/** The lock file's format version: a reader refuses any other. */
export const LOCK_FORMAT = 1;

/**
 * One pipeline's lock (`<pipeline>.lock.json`): for every task with a remote input, the parameters
 * the pipeline declared and what they resolved to (exact kernel version and tarball sha256, the
 * mirror's URL, the rootfs's package set with each .deb's sha256 and the InRelease it came from).
 */
export interface LockFile {
  gpuGuestLock: number;
  pipeline: string;
  sourceDate: number;
  tasks: { [id: string]: LockedTask };
}

export interface LockedTask {
  kind: string;
  declared: JsonObject;
  resolved: JsonObject;
}

/** Whether a task has remote inputs a lock pins: its step resolves or locks them. */
export function isLockable(task: TaskSpec, steps: StepRegistry): boolean {
  const step = steps.get(task.kind);
  return Boolean(step?.resolve || step?.lock);
}

/**
 * Resolves every lockable task with the network, as a build would, then pins what its step locks.
 * A task's lock hook sees the locked parameters of the lockable tasks it reads (a driver's package
 * set is what apt adds to the locked rootfs), so those are locked first; the rest in parallel.
 */
export async function lockGraph(graph: TaskGraph, steps: StepRegistry, sourceDate: number, ctx: ResolveContext): Promise<LockFile> {
  const lockable = graph.tasks.filter((t) => isLockable(t, steps));
  const locking = new Map<string, Promise<LockedTask>>();
  const lockTask = (task: TaskSpec): Promise<LockedTask> => {
    let pending = locking.get(task.id);
    if (pending) return pending;
    pending = (async () => {
      const upstream: { [role: string]: JsonObject } = {};
      for (const [role, id] of Object.entries(task.upstream)) {
        const up = lockable.find((t) => t.id === id);
        if (up) upstream[role] = (await lockTask(up)).resolved;
      }
      const step = steps.get(task.kind)!;
      let params = step.resolve ? ((await step.resolve(task.params, task.files, ctx)) as JsonObject) : task.params;
      if (step.lock) params = (await step.lock(params, task.files, ctx, upstream)) as JsonObject;
      return { kind: task.kind, declared: task.params, resolved: params };
    })();
    locking.set(task.id, pending);
    return pending;
  };
  const entries = await Promise.all(lockable.map(async (task): Promise<[string, LockedTask]> => [task.id, await lockTask(task)]));
  return { gpuGuestLock: LOCK_FORMAT, pipeline: graph.pipeline, sourceDate, tasks: Object.fromEntries(entries.sort(([a], [b]) => a.localeCompare(b))) };
}

/** Writes the lock whole (temp file, then rename), keys sorted at every level so diffs stay small. */
export function writeLock(file: string, lock: LockFile): void {
  const tmp = `${file}.${process.pid}.tmp`;
  writeFileSync(tmp, `${JSON.stringify(JSON.parse(canonicalJson(lock as unknown as Json)), null, 2)}\n`);
  renameSync(tmp, file);
}

export function readLock(file: string): LockFile {
  if (!existsSync(file)) throw new GuestError('E_USAGE', `--lock ${file}: no such file (write it with \`gpu-guest lock --lock ${file}\`, or pass --update-lock)`);
  let data: unknown;
  try {
    data = JSON.parse(readFileSync(file, 'utf8'));
  } catch (err) {
    throw new GuestError('E_LOCK_INVALID', `${file}: not a gpu-guest lock (${(err as Error).message})`, { cause: err });
  }
  const lock = data as Partial<LockFile>;
  if (typeof lock !== 'object' || lock === null || lock.gpuGuestLock !== LOCK_FORMAT || typeof lock.pipeline !== 'string' || typeof lock.sourceDate !== 'number' || typeof lock.tasks !== 'object' || lock.tasks === null) {
    const why = typeof lock === 'object' && lock !== null && 'gpuGuestLock' in lock && lock.gpuGuestLock !== LOCK_FORMAT ? `format ${String(lock.gpuGuestLock)}, this gpu-guest reads ${LOCK_FORMAT}` : 'gpuGuestLock, pipeline, sourceDate or tasks missing';
    throw new GuestError('E_LOCK_INVALID', `${file}: not a gpu-guest lock (${why})`);
  }
  for (const [id, t] of Object.entries(lock.tasks)) {
    if (typeof t !== 'object' || t === null || typeof t.kind !== 'string' || typeof t.declared !== 'object' || typeof t.resolved !== 'object' || !t.declared || !t.resolved) {
      throw new GuestError('E_LOCK_INVALID', `${file}: task ${id} lacks kind, declared or resolved`);
    }
  }
  return lock as LockFile;
}

/** What differs between the lock and the pipeline as loaded now, one line each (empty: it matches). */
export function lockDifferences(lock: LockFile, graph: TaskGraph, steps: StepRegistry, sourceDate: number): string[] {
  const out: string[] = [];
  if (lock.pipeline !== graph.pipeline) out.push(`pipeline: locked ${lock.pipeline}, loaded ${graph.pipeline}`);
  if (lock.sourceDate !== sourceDate) out.push(`sourceDate: locked ${lock.sourceDate}, now ${sourceDate}`);
  const lockable = graph.tasks.filter((t) => isLockable(t, steps));
  for (const task of lockable) {
    const entry = lock.tasks[task.id];
    if (!entry) {
      out.push(`${task.id}: not in the lock`);
      continue;
    }
    if (entry.kind !== task.kind) out.push(`${task.id}: locked as a ${entry.kind} task, now ${task.kind}`);
    const keys = [...new Set([...Object.keys(entry.declared), ...Object.keys(task.params)])].sort();
    for (const k of keys) {
      const was = entry.declared[k] ?? null;
      const now = task.params[k] ?? null;
      if (canonicalJson(was) !== canonicalJson(now)) out.push(`${task.id} ${k}: ${describeChange(was, now)}`);
    }
  }
  for (const id of Object.keys(lock.tasks)) if (!lockable.some((t) => t.id === id)) out.push(`${id}: in the lock, not in the pipeline`);
  return out;
}

/** `--lock FILE`: read, and checked against the loaded pipeline (E_LOCK_MISMATCH). */
export function readCheckedLock(file: string, graph: TaskGraph, steps: StepRegistry, sourceDate: number): LockFile {
  const lock = readLock(file);
  checkLock(file, lock, graph, steps, sourceDate);
  return lock;
}

/** Throws E_LOCK_MISMATCH naming every difference, when the pipeline no longer matches its lock. */
export function checkLock(file: string, lock: LockFile, graph: TaskGraph, steps: StepRegistry, sourceDate: number): void {
  const differences = lockDifferences(lock, graph, steps, sourceDate);
  if (differences.length === 0) return;
  const first = differences[0]!;
  throw new GuestError('E_LOCK_MISMATCH', `${file} does not match the pipeline: ${first}${differences.length > 1 ? ` (and ${differences.length - 1} more)` : ''}; refresh it with --update-lock or \`gpu-guest lock\``, { details: differences });
}

/** `a → b`, or for two lists what was added and removed. */
function describeChange(was: Json, now: Json): string {
  if (Array.isArray(was) && Array.isArray(now)) {
    const a = new Set(was.map((v) => canonicalJson(v)));
    const b = new Set(now.map((v) => canonicalJson(v)));
    const added = [...b].filter((v) => !a.has(v));
    const removed = [...a].filter((v) => !b.has(v));
    if (added.length || removed.length) return [added.length ? `added ${added.join(', ')}` : '', removed.length ? `removed ${removed.join(', ')}` : ''].filter(Boolean).join('; ');
    return `reordered ${canonicalJson(was)} → ${canonicalJson(now)}`;
  }
  return `locked ${canonicalJson(was)}, now ${canonicalJson(now)}`;
}
