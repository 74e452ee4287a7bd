import { copyFileSync } from 'node:fs';
import { join } from 'node:path';
import { GuestError, isGuestError, messageOf } from '../errors.js';
import { TaskLog } from '../sys/task-log.js';
import type { StepContext, StepRegistry, UpstreamOutput } from '../steps/types.js';
import type { CacheEntry, CacheStore } from './cache.js';
import { digestOutputs } from './outputs.js';
import type { EventBus, PlannedTask, TaskEndStatus, TaskResult } from './events.js';
import type { Plan } from './plan.js';
import type { TaskGraph, TaskSpec } from './types.js';

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
}

export interface RunOutcome {
  status: 'succeeded' | 'failed' | 'interrupted';
  results: TaskResult[];
  /** Entries of every task that is done (run or cached), by id. */
  entries: Map<string, CacheEntry>;
  /** The first failure, with its log. */
  failure?: { id: string; error: GuestError; logFile: string; tail: string[] };
}

type State = 'pending' | 'running' | TaskEndStatus;

/** Runs the tasks a plan marks `run`, concurrently within the steps' resource limits. */
export async function runPlan(plan: Plan, graph: TaskGraph, steps: StepRegistry, store: CacheStore, bus: EventBus, opts: RunOptions): Promise<RunOutcome> {
  const started = Date.now();
  const specs = new Map(graph.tasks.map((t) => [t.id, t]));
  const state = new Map<string, State>();
  const results = new Map<string, TaskResult>();
  const entries = new Map<string, CacheEntry>();
  let failure: RunOutcome['failure'];
  bus.emit({ type: 'run:start', time: Date.now(), pipeline: plan.pipeline, tasks: plan.tasks });

  const finish = (t: PlannedTask, status: TaskEndStatus, durationMs: number) => {
    state.set(t.id, status);
    results.set(t.id, { id: t.id, status, durationMs, key: t.key });
  };
  for (const t of plan.tasks) {
    if (t.cached) {
      const entry = await store.get(t.key);
      if (entry) entries.set(t.id, entry);
    }
    if (t.status === 'cached') {
      finish(t, 'cached', 0);
      store.rememberMaterial(plan.pipeline, t.id, plan.materials.get(t.id)!);
      bus.emit({ type: 'task:end', time: Date.now(), id: t.id, status: 'cached', durationMs: 0 });
    } else if (t.status === 'skip') {
      state.set(t.id, 'skipped');
    } else {
      state.set(t.id, 'pending');
    }
  }

  const running = new Map<string, Promise<void>>();
  let stopping = false;
  const isDone = (id: string) => state.get(id) === 'succeeded' || state.get(id) === 'cached' || (state.get(id) === 'skipped' && entries.has(id));
  const isBroken = (id: string) => ['failed', 'cancelled'].includes(state.get(id)!) || (state.get(id) === 'skipped' && !entries.has(id) && results.has(id));
  const cpuAllBusy = () => [...running.keys()].some((id) => steps.get(specs.get(id)!.kind)!.resources.cpu === 'all');

  for (;;) {
    if (opts.signal.aborted) stopping = true;
    for (const t of plan.tasks) {
      if (state.get(t.id) !== 'pending') continue;
      const brokenDep = t.deps.find(isBroken);
      if (brokenDep) {
        finish(t, 'skipped', 0);
        bus.emit({ type: 'task:end', time: Date.now(), id: t.id, status: 'skipped', durationMs: 0, error: { code: 'E_UPSTREAM_FAILED', message: `not run: ${brokenDep} did not succeed`, details: [] } });
        continue;
      }
      if (stopping || !t.deps.every(isDone) || running.size >= opts.jobs) continue;
      const step = steps.get(t.kind)!;
      if (step.resources.cpu === 'all' && cpuAllBusy()) continue;
      state.set(t.id, 'running');
      const job = runTask(t, specs.get(t.id)!, { steps, store, bus, opts, entries, plan }).then((r) => {
        finish(t, r.status, r.durationMs);
        if (r.entry) entries.set(t.id, r.entry);
        if (r.failure && !failure) failure = r.failure;
        if (r.status === 'failed' && !opts.keepGoing) stopping = true;
        running.delete(t.id);
      });
      running.set(t.id, job);
    }
    if (running.size === 0) break;
    await Promise.race(running.values());
  }

  for (const t of plan.tasks) {
    if (state.get(t.id) === 'pending') {
      finish(t, 'cancelled', 0);
      bus.emit({ type: 'task:end', time: Date.now(), id: t.id, status: 'cancelled', durationMs: 0 });
    }
  }
  const ordered = plan.tasks.filter((t) => results.has(t.id)).map((t) => results.get(t.id)!);
  const wantedDone = plan.tasks.filter((t) => t.status !== 'skip').every((t) => ['succeeded', 'cached'].includes(state.get(t.id)!));
  const status = opts.signal.aborted ? 'interrupted' : wantedDone ? 'succeeded' : 'failed';
  bus.emit({ type: 'run:end', time: Date.now(), status, durationMs: Date.now() - started, results: ordered });
  return { status, results: ordered, entries, failure };
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

async function runTask(t: PlannedTask, spec: TaskSpec, env: TaskRunEnv): Promise<TaskRunResult> {
  const { store, bus, opts } = env;
  const step = env.steps.get(t.kind)!;
  const material = env.plan.materials.get(t.id)!;
  const logFile = join(opts.logsDir, `${t.id}.log`);
  let release: (() => Promise<void>) | undefined;
  try {
    release = await store.lock(t.key, (holder) => bus.emit({ type: 'task:wait', time: Date.now(), id: t.id, holder }), opts.signal);
  } catch {
    // only an abort ends the wait for a lock
    bus.emit({ type: 'task:end', time: Date.now(), id: t.id, status: 'cancelled', durationMs: 0 });
    return { status: 'cancelled', durationMs: 0 };
  }
  const forced = t.reasons.some((r) => r.startsWith('forced'));
  try {
    const existing = forced ? undefined : await store.get(t.key);
    if (existing) {
      // Another process built it while we waited for the lock.
      store.rememberMaterial(env.plan.pipeline, t.id, material);
      bus.emit({ type: 'task:end', time: Date.now(), id: t.id, status: 'cached', durationMs: 0 });
      return { status: 'cached', durationMs: 0, entry: existing };
    }
    return await executeStep(t, spec, step, env, logFile);
  } finally {
    await release();
  }
}

async function executeStep(t: PlannedTask, spec: TaskSpec, step: NonNullable<ReturnType<StepRegistry['get']>>, env: TaskRunEnv, logFile: string): Promise<TaskRunResult> {
  const { store, bus, opts } = env;
  const begin = Date.now();
  const log = new TaskLog(logFile, (line) => bus.emit({ type: 'task:log', time: Date.now(), id: t.id, line }));
  const scratch = await store.begin(t.key);
  bus.emit({ type: 'task:start', time: begin, id: t.id });
  log.info(`# ${t.id} (${t.kind} v${step.version}) key ${t.key}`);
  const upstream: { [id: string]: UpstreamOutput } = {};
  for (const d of spec.deps) {
    const e = env.entries.get(d)!;
    upstream[d] = { dir: e.outDir, result: e.meta.result };
  }
  const ctx: StepContext = {
    task: spec,
    key: t.key,
    params: t.params,
    files: spec.files,
    locations: spec.locations ?? {},
    outDir: scratch.outDir,
    workDir: scratch.workDir,
    upstream,
    log,
    signal: opts.signal,
    progress: (label, done, total) => bus.emit({ type: 'task:progress', time: Date.now(), id: t.id, label, done, total }),
    cacheDir: store.root,
    sourceDate: opts.sourceDate,
  };
  try {
    const result = (await step.run(ctx)) ?? {};
    if (opts.signal.aborted) throw new GuestError('E_INTERRUPTED', `${t.id} interrupted`);
    const durationMs = Date.now() - begin;
    log.info(`# done in ${(durationMs / 1000).toFixed(1)} s`);
    log.close();
    copyFileSync(logFile, join(scratch.outDir, '..', 'log.txt'));
    const outputs = await digestOutputs(scratch.outDir, step.undigested ?? []);
    const entry = await store.commit(scratch, { key: t.key, task: t.id, pipeline: env.plan.pipeline, material: env.plan.materials.get(t.id)!, result, outputs, durationMs });
    store.rememberMaterial(env.plan.pipeline, t.id, env.plan.materials.get(t.id)!);
    bus.emit({ type: 'task:end', time: Date.now(), id: t.id, status: 'succeeded', durationMs });
    return { status: 'succeeded', durationMs, entry };
  } catch (err) {
    const durationMs = Date.now() - begin;
    const error = isGuestError(err) ? err : new GuestError('E_STEP_FAILED', `${t.id}: ${messageOf(err)}`, { cause: err });
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
