import { copyFileSync, statfsSync } from 'node:fs';
import { join } from 'node:path';
import { GuestError, isGuestError, messageOf } from '../model/errors.js';
import type { JsonObject } from '../model/json.js';
import type { AnyStep, StepContext, StepRegistry, UpstreamOutput } from '../model/step.js';
import type { PlannedTask, TaskEndStatus, TaskGraph, TaskResult, TaskSpec } from '../model/task.js';
import { TaskLog } from '../sys/task-log.js';
import type { CacheEntry, CacheStore } from './cache.js';
import { digestOutputs } from './outputs.js';
import type { EventBus } from './events.js';
import { cutoffRole } from './key.js';
import { settleKey, type Plan } from './plan.js';
import { Schedule } from './schedule.js';
import { criticalPath, type CriticalPath } from './report/critical-path.js';

export interface RunOptions {
  /** Most tasks running at once. Default: the number of tasks. */
  jobs: number;
  /** Keep running branches that do not depend on a failed task. Default false. */
  keepGoing: boolean;
  /** Folder for one log per task. */
  logsDir: string;
  /** Aborted on Ctrl-C / SIGTERM. */
  signal: AbortSignal;
  /** Seconds since the epoch stamped into artifacts. */
  sourceDate: number;
  /** False under --offline: steps refuse to reach the network (E_OFFLINE). Default true. */
  network?: boolean;
}

export interface RunOutcome {
  status: 'succeeded' | 'failed' | 'interrupted';
  results: TaskResult[];
  /** Entries of every task that is done (run or cached), by id. */
  entries: Map<string, CacheEntry>;
  /** The first failure, with its log. */
  failure?: { id: string; error: GuestError; logFile: string; tail: string[] };
  /** The chain of tasks that decided the wall time. */
  criticalPath: CriticalPath;
}

/** Runs the tasks a plan marks `run`, concurrently within the steps' resource limits. */
export async function runPlan(plan: Plan, graph: TaskGraph, steps: StepRegistry, store: CacheStore, bus: EventBus, opts: RunOptions): Promise<RunOutcome> {
  const started = Date.now();
  const specs = new Map(graph.tasks.map((t) => [t.id, t]));
  const results = new Map<string, TaskResult>();
  const entries = new Map<string, CacheEntry>();
  let failure: RunOutcome['failure'];
  bus.emit({ type: 'run:start', time: Date.now(), pipeline: plan.pipeline, tasks: plan.tasks });

  const end = (t: PlannedTask, status: TaskEndStatus, durationMs: number, extra: Partial<Extract<Parameters<EventBus['emit']>[0], { type: 'task:end' }>> = {}) => {
    results.set(t.id, { id: t.id, status, durationMs, key: t.key });
    bus.emit({ type: 'task:end', time: Date.now(), id: t.id, status, durationMs, ...extra });
  };
  for (const t of plan.tasks) {
    const entry = t.cached ? await store.get(t.key) : undefined;
    if (entry) entries.set(t.id, entry);
    if (t.status === 'cached') {
      store.rememberMaterial(plan.pipeline, t.id, plan.materials.get(t.id)!);
      end(t, 'cached', 0);
    }
  }
  const schedule = new Schedule(
    plan.tasks.map((t) => ({ id: t.id, deps: t.deps, cpu: steps.get(t.kind)!.resources.cpu, start: t.status === 'skip' ? 'unselected' : t.status === 'cached' ? 'cached' : 'run', hasEntry: entries.has(t.id) })),
    { jobs: opts.jobs, keepGoing: opts.keepGoing },
  );
  const byId = new Map(plan.tasks.map((t) => [t.id, t]));
  const running = new Map<string, Promise<void>>();
  const onAbort = () => schedule.stop();
  opts.signal.addEventListener('abort', onAbort, { once: true });
  if (opts.signal.aborted) schedule.stop();
  try {
    for (;;) {
      for (const d of schedule.next()) {
        const t = byId.get(d.id)!;
        if (d.type === 'skip') {
          end(t, 'skipped', 0, { error: { code: 'E_UPSTREAM_FAILED', message: `not run: ${d.because} did not succeed`, details: [] } });
          continue;
        }
        const job = startTask(t, specs.get(t.id)!, { steps, store, bus, opts, entries, plan }).then((r) => {
          results.set(t.id, { id: t.id, status: r.status, durationMs: r.durationMs, key: t.key });
          if (r.entry) entries.set(t.id, r.entry);
          if (r.failure && !failure) failure = r.failure;
          schedule.finish(t.id, r.status, r.entry !== undefined);
          running.delete(t.id);
        });
        running.set(t.id, job);
      }
      if (running.size === 0) break;
      await Promise.race(running.values());
    }
  } finally {
    opts.signal.removeEventListener('abort', onAbort);
  }
  for (const id of schedule.cancelPending()) end(byId.get(id)!, 'cancelled', 0);
  const ordered = plan.tasks.filter((t) => results.has(t.id)).map((t) => results.get(t.id)!);
  const status = opts.signal.aborted ? 'interrupted' : schedule.allSucceeded ? 'succeeded' : 'failed';
  const ranMs = (id: string) => (results.get(id)?.status === 'succeeded' || results.get(id)?.status === 'failed' ? results.get(id)!.durationMs : 0);
  const critical = criticalPath(plan.tasks.map((t) => ({ id: t.id, deps: t.deps, ranMs: ranMs(t.id) })));
  bus.emit({ type: 'run:end', time: Date.now(), status, durationMs: Date.now() - started, results: ordered, criticalPath: critical });
  return { status, results: ordered, entries, failure, criticalPath: critical };
}

interface TaskRunEnv {
  steps: StepRegistry;
  store: CacheStore;
  bus: EventBus;
  opts: RunOptions;
  entries: Map<string, CacheEntry>;
  plan: Plan;
}

interface TaskRunResult {
  status: TaskEndStatus;
  durationMs: number;
  entry?: CacheEntry;
  failure?: RunOutcome['failure'];
}

/**
 * Runs a task whose upstreams are done. A key that waited for upstream outputs (early cutoff) is
 * made first: when they came out as before, the key is one the cache has and the task is cached.
 */
async function startTask(t: PlannedTask, spec: TaskSpec, env: TaskRunEnv): Promise<TaskRunResult> {
  if (!t.keyAfter) return runTask(t, spec, env);
  const step = env.steps.get(t.kind)!;
  settleKey(t, spec, step, env.plan.materials.get(t.id)!, env.entries);
  const outputs = Object.entries(spec.upstream).filter(([role]) => cutoffRole(step, role)).map(([, id]) => id);
  return runTask(t, spec, env, `what ${outputs.join(' and ')} made is unchanged`);
}

async function runTask(t: PlannedTask, spec: TaskSpec, env: TaskRunEnv, cachedNote?: string): Promise<TaskRunResult> {
  const { store, bus, opts } = env;
  const logFile = join(opts.logsDir, `${t.id}.log`);
  let release: () => Promise<void>;
  try {
    release = await store.lock(t.key, (holder) => bus.emit({ type: 'task:wait', time: Date.now(), id: t.id, holder }), opts.signal);
  } catch (err) {
    const error = isGuestError(err) ? err : new GuestError('E_CACHE_LOCK', `${t.id}: ${messageOf(err)}`, { cause: err });
    const status: TaskEndStatus = error.code === 'E_INTERRUPTED' ? 'cancelled' : 'failed';
    bus.emit({ type: 'task:end', time: Date.now(), id: t.id, status, durationMs: 0, error: { code: error.code, message: error.message, details: error.details } });
    return { status, durationMs: 0, failure: status === 'failed' ? { id: t.id, error, logFile, tail: [] } : undefined };
  }
  try {
    const existing = t.forced ? undefined : await store.get(t.key);
    if (existing) {
      // Another process built it while we waited for the lock, or (cachedNote) the upstream outputs it reads are unchanged.
      store.rememberMaterial(env.plan.pipeline, t.id, env.plan.materials.get(t.id)!);
      bus.emit({ type: 'task:end', time: Date.now(), id: t.id, status: 'cached', durationMs: 0, ...(cachedNote ? { note: cachedNote } : {}) });
      return { status: 'cached', durationMs: 0, entry: existing };
    }
    return await executeStep(t, spec, env.steps.get(t.kind)!, env, logFile);
  } finally {
    await release();
  }
}

/** The upstream entries a step reads, by the roles the task declares. */
function upstreamByRole(spec: TaskSpec, entries: Map<string, CacheEntry>): { [role: string]: UpstreamOutput } {
  const upstream: { [role: string]: UpstreamOutput } = {};
  for (const [role, id] of Object.entries(spec.upstream)) {
    const e = entries.get(id)!;
    upstream[role] = { dir: e.outDir, result: e.meta.result };
  }
  return upstream;
}

async function executeStep(t: PlannedTask, spec: TaskSpec, step: AnyStep, env: TaskRunEnv, logFile: string): Promise<TaskRunResult> {
  const { store, bus, opts } = env;
  const begin = Date.now();
  const log = new TaskLog(logFile, (line) => bus.emit({ type: 'task:log', time: Date.now(), id: t.id, line }));
  const scratch = await store.begin(t.key);
  bus.emit({ type: 'task:start', time: begin, id: t.id });
  log.info(`# ${t.id} (${t.kind} v${step.version}) key ${t.key}`);
  const ctx: StepContext = {
    task: spec,
    key: t.key,
    params: t.params,
    files: spec.files,
    locations: spec.locations ?? {},
    outDir: scratch.outDir,
    workDir: scratch.workDir,
    upstream: upstreamByRole(spec, env.entries),
    log,
    signal: opts.signal,
    progress: (label, done, total) => bus.emit({ type: 'task:progress', time: Date.now(), id: t.id, label, done, total }),
    earlier: async (kind) => (await store.entriesOf(kind)).map((e) => ({ key: e.key, outDir: e.outDir, material: e.meta.material, result: e.meta.result })),
    cacheDir: store.root,
    sourceDate: opts.sourceDate,
    network: opts.network ?? true,
  };
  try {
    const result: JsonObject = (await step.run(ctx)) ?? {};
    if (opts.signal.aborted) throw new GuestError('E_INTERRUPTED', `${t.id} interrupted`);
    const durationMs = Date.now() - begin;
    log.info(`# done in ${(durationMs / 1000).toFixed(1)} s`);
    log.close();
    copyFileSync(logFile, join(scratch.outDir, '..', 'log.txt'));
    const outputs = await digestOutputs(scratch.outDir, step.undigested ?? []);
    const entry = await store.commit(scratch, { key: t.key, task: t.id, kind: t.kind, pipeline: env.plan.pipeline, material: env.plan.materials.get(t.id)!, result, outputs, durationMs });
    store.rememberMaterial(env.plan.pipeline, t.id, env.plan.materials.get(t.id)!);
    bus.emit({ type: 'task:end', time: Date.now(), id: t.id, status: 'succeeded', durationMs, logFile });
    return { status: 'succeeded', durationMs, entry };
  } catch (err) {
    const durationMs = Date.now() - begin;
    const error = diskFullError(t.id, err, log.tail(30), store.root) ?? (isGuestError(err) ? err : new GuestError('E_STEP_FAILED', `${t.id}: ${messageOf(err)}`, { cause: err }));
    const interrupted = opts.signal.aborted || error.code === 'E_INTERRUPTED';
    log.info(`# ${interrupted ? 'interrupted' : `failed: ${error.code}: ${error.message}`}`);
    for (const d of error.details) log.info(`#   ${d}`);
    const tail = log.tail(30);
    log.close();
    await store.discard(scratch);
    const status: TaskEndStatus = interrupted ? 'cancelled' : 'failed';
    bus.emit({ type: 'task:end', time: Date.now(), id: t.id, status, durationMs, error: { code: error.code, message: error.message, details: error.details }, logFile });
    return { status, durationMs, failure: interrupted ? undefined : { id: t.id, error, logFile, tail } };
  }
}

/**
 * A task that ran out of disk space (ENOSPC from Node, or a command's "No space left on device")
 * is E_DISK_FULL, saying how much the cache's file system has left and how to free some.
 */
function diskFullError(id: string, err: unknown, tail: string[], cacheRoot: string): GuestError | undefined {
  const nospc = (err as NodeJS.ErrnoException)?.code === 'ENOSPC' || /no space left on device/i.test(`${messageOf(err)}\n${tail.join('\n')}`);
  if (!nospc) return undefined;
  let free = 'unknown';
  try {
    const fs = statfsSync(cacheRoot);
    free = `${((fs.bavail * fs.bsize) / 1024 ** 3).toFixed(1)} GiB`;
  } catch {
    // the figure is a help, not a condition
  }
  return new GuestError('E_DISK_FULL', `${id}: ran out of disk space (No space left on device); the cache ${cacheRoot} has ${free} free: free some, e.g. gpu-guest cache prune --max-size <size> or --older-than 14d, and run again`, { cause: err, details: isGuestError(err) ? err.details : [] });
}
