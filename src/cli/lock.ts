import { resolve } from 'node:path';
import { GuestError } from '../model/errors.js';
import { canonicalJson, type Json } from '../model/json.js';
import { checkLock, lockGraph, readCheckedLock, writeLock, type LockFile, type LockedTask } from '../engine/lock.js';
import { defaultCacheDir } from '../paths.js';
import { redact } from '../model/redact.js';
import { checkOutputFile, type CliEnv, type Loaded, type PipelineOptions } from './context.js';
import { abortOnSignals } from './signals.js';

export interface LockOptions extends PipelineOptions {
  /** The lock file; default `<pipeline>.lock.json` in the current folder. */
  lock?: string;
  json?: boolean;
}

/** gpu-guest lock: resolve every remote input of the pipeline with the network and write the lock. */
export async function lockCommand(opts: LockOptions, env: CliEnv): Promise<number> {
  const loaded = env.loadGraph(opts);
  const file = resolve(opts.lock ?? `${loaded.graph.pipeline}.lock.json`);
  const signals = abortOnSignals(() => undefined);
  try {
    const lock = await refreshLock(file, loaded, opts, env, signals.signal);
    if (opts.json) env.stdout(`${JSON.stringify({ file, lock }, null, 2)}\n`);
    else env.stdout(`${describeLock(file, lock)}\n`);
    return 0;
  } finally {
    signals.dispose();
  }
}

/**
 * The lock `build` is to use: `--lock FILE` read and checked against the loaded pipeline (refreshed
 * first with `--update-lock`); none without `--lock`. Fails before anything is built or written.
 */
export async function lockForBuild(opts: PipelineOptions & { lock?: string; updateLock?: boolean; offline?: boolean }, loaded: Loaded, env: CliEnv, signal: AbortSignal): Promise<LockFile | undefined> {
  if (!opts.lock) {
    if (opts.updateLock) throw new GuestError('E_USAGE', '--update-lock: name the lock to refresh with --lock FILE');
    return undefined;
  }
  const file = resolve(opts.lock);
  if (opts.updateLock) {
    if (opts.offline) throw new GuestError('E_USAGE', '--offline and --update-lock: refreshing a lock asks the mirrors; refresh it where they are reachable, then build with --offline');
    const lock = await refreshLock(file, loaded, opts, env, signal);
    env.stderr(`${describeLock(file, lock)}\n`);
    return lock;
  }
  return readCheckedLock(file, loaded.graph, env.steps, loaded.sourceDate);
}

/**
 * The lock `plan` and `verify` look up keys with: `--lock FILE`, or the lock inside `--bundle FILE`
 * (read without unpacking the rest), checked against the loaded pipeline; none without either.
 */
export async function lockOfRun(opts: { lock?: string; bundle?: string }, loaded: Loaded, env: CliEnv): Promise<LockFile | undefined> {
  if (opts.lock && opts.bundle) throw new GuestError('E_USAGE', '--lock and --bundle: a bundle carries its own lock; give one of them');
  if (opts.lock) return readCheckedLock(resolve(opts.lock), loaded.graph, env.steps, loaded.sourceDate);
  if (!opts.bundle) return undefined;
  const { readBundleLock } = await import('../sys/bundle.js');
  const lock = await readBundleLock(resolve(opts.bundle));
  checkLock(`the lock in ${opts.bundle}`, lock, loaded.graph, env.steps, loaded.sourceDate);
  return lock;
}

/**
 * `--bundle FILE` without `--vendor` or `--pipeline`: the pipeline the bundle carries (unpacked for
 * this run, checked against its index) is the one loaded. Otherwise the options as given.
 */
export async function withBundledPipeline<T extends PipelineOptions & { bundle?: string }>(opts: T): Promise<T> {
  if (!opts.bundle || opts.pipeline || opts.vendor) return opts;
  const { extractBundledPipeline } = await import('../sys/bundle.js');
  return { ...opts, pipeline: await extractBundledPipeline(resolve(opts.bundle)) };
}

async function refreshLock(file: string, loaded: Loaded, opts: PipelineOptions, env: CliEnv, signal: AbortSignal): Promise<LockFile> {
  checkOutputFile('--lock', file);
  const cacheDir = resolve(opts.cacheDir ?? defaultCacheDir(env.env));
  const lock = await lockGraph(loaded.graph, env.steps, loaded.sourceDate, { signal, cacheDir, network: true });
  writeLock(file, lock);
  return lock;
}

/** What the lock pins, a line per task: what each declared input resolved to. */
export function describeLock(file: string, lock: LockFile): string {
  const lines = [`locked ${lock.pipeline} in ${file} (source date ${lock.sourceDate})`];
  for (const [id, task] of Object.entries(lock.tasks)) lines.push(`  ${id.padEnd(14)} ${describeTask(task) || 'as declared (no remote input to resolve)'}`);
  return redact(lines.join('\n'));
}

function describeTask(task: LockedTask): string {
  return Object.keys(task.resolved)
    .sort()
    .filter((k) => canonicalJson(task.resolved[k]!) !== canonicalJson(task.declared[k] ?? null))
    .map((k) => describeResolved(k, task.resolved[k]!))
    .join(', ');
}

/**
 * One resolved parameter for a person: a sha256 shortened, a pinned package set counted (the lock
 * and `plan --json` carry it whole).
 */
export function describeResolved(key: string, value: Json): string {
  if (key === 'locked' && value && typeof value === 'object' && !Array.isArray(value)) {
    const { packages, release, releases } = value as { packages?: unknown[]; release?: { sha256?: string }; releases?: { sha256?: string }[] };
    const signed = (releases ?? (release ? [release] : [])).map((r) => `${r.sha256?.slice(0, 12) ?? '?'}…`);
    return `${packages?.length ?? 0} packages pinned by sha256 (InRelease ${signed.join(', ') || '?'})`;
  }
  return `${key} ${typeof value === 'string' && /^[0-9a-f]{64}$/.test(value) ? `${value.slice(0, 12)}…` : JSON.stringify(value)}`;
}
