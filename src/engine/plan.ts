import { GuestError, isGuestError } from '../model/errors.js';
import { canonicalJson, sha256Hex, type JsonObject } from '../model/json.js';
import type { AnyStep, PreflightContext, StepRegistry } from '../model/step.js';
import { taskDeps, type KeyMaterial, type PlannedTask, type TaskGraph, type TaskSpec } from '../model/task.js';
import type { CacheEntry, CacheStore } from './cache.js';
import type { DigestMemo } from './digest.js';
import { ancestorsOf, descendantsOf, requireTask, topoOrder } from './graph.js';
import type { LockFile } from './lock.js';
import { memoryLog } from '../sys/task-log.js';
import { cutoffRole, describeChange, outputIdentity, taskKey } from './key.js';

/** Which tasks a command selects. Defaults: every task, nothing forced. */
export interface Selection {
  /** `--force T`: T and what depends on it run even when cached. */
  force?: string[];
  /** `--until T`: stop after T (T and its dependencies only). */
  until?: string;
  /** `--only T`: run just T; its dependencies must be cached. */
  only?: string;
}

export interface Plan {
  pipeline: string;
  /** In an order where every task follows its dependencies. */
  tasks: PlannedTask[];
  /** Key material by task id, recorded in entries and used to explain the next plan. */
  materials: Map<string, KeyMaterial>;
}

export interface PlanContext {
  steps: StepRegistry;
  store: CacheStore;
  memo: DigestMemo;
  signal: AbortSignal;
  /**
   * Whether resolving inputs may use the network (a build: yes). Without it (`plan`), a task whose
   * resolution needs the network reuses what the last build recorded, or is shown as resolving at
   * build time.
   */
  network: boolean;
  /** `build --offline`: a resolution that needs the network and was never recorded is E_OFFLINE. */
  offline?: boolean;
  /**
   * `--lock FILE`, already checked against the graph (checkLock): lockable tasks take the lock's
   * resolved parameters, with no resolution and no network.
   */
  lock?: LockFile;
}

/** Decides, without running anything, which tasks are cached, which must run and why. */
export async function planRun(graph: TaskGraph, selection: Selection, ctx: PlanContext): Promise<Plan> {
  const order = topoOrder(graph);
  for (const id of selection.force ?? []) requireTask(graph, id, '--force');
  if (selection.until) requireTask(graph, selection.until, '--until');
  if (selection.only) requireTask(graph, selection.only, '--only');
  const forced = new Set<string>();
  for (const id of selection.force ?? []) for (const d of descendantsOf(graph, id)) forced.add(d);
  const wanted = selection.only ? new Set([selection.only]) : selection.until ? ancestorsOf(graph, selection.until) : undefined;
  // --only T needs the keys of T's inputs, so they resolve as a build would (one pod of a CI DAG
  // starts with an empty cache and no recorded resolution); tasks that T does not read do not
  const resolving = selection.only ? ancestorsOf(graph, selection.only) : wanted;

  const materials = new Map<string, KeyMaterial>();
  const tasks: PlannedTask[] = [];
  const byId = new Map<string, PlannedTask>();
  for (const task of order) {
    const step = ctx.steps.get(task.kind);
    if (!step) throw new GuestError('E_UNKNOWN_STEP', `task ${task.id} uses step kind ${task.kind}, which this gpu-guest does not have (update gpu-guest, or fix the pipeline)`);
    // a task outside --until (or not read by --only) is shown, never run: it resolves as plan does, without the network
    const selected = !resolving || resolving.has(task.id);
    const { params, note } = await resolveParams(step, task, selected ? ctx : { ...ctx, network: false, offline: false });
    const { upstream, keyAfter } = await upstreamIdentities(task, step, byId, forced, ctx.store);
    const material: KeyMaterial = {
      kind: task.kind,
      stepVersion: step.version,
      params: step.identity ? step.identity(params) : params,
      inputs: await ctx.memo.inputs(task.files),
      upstream,
    };
    // a key that waits for an upstream's output is made once that upstream has run (runPlan)
    const key = keyAfter ? '' : taskKey(material);
    materials.set(task.id, material);
    const cached = key !== '' && (await ctx.store.get(key)) !== undefined;
    const resolved = Object.fromEntries(Object.entries(params).filter(([k, v]) => canonicalJson(v) !== canonicalJson(task.params[k] ?? null)));
    const planned: PlannedTask = { id: task.id, kind: task.kind, title: task.title, key, deps: taskDeps(task), params, resolved, inputs: material.inputs, status: 'run', cached, forced: false, reasons: [], ...(keyAfter ? { keyAfter } : {}) };
    if (wanted && !wanted.has(task.id)) {
      planned.status = 'skip';
      planned.reasons = [selection.only ? `not selected (--only ${selection.only})` : `after --until ${selection.until}`];
    } else if (forced.has(task.id)) {
      planned.forced = true;
      planned.reasons = [(selection.force ?? []).includes(task.id) ? 'forced' : 'forced (depends on a forced task)'];
    } else if (cached) {
      planned.status = 'cached';
    } else if (keyAfter) {
      planned.reasons = [`${keyAfter} runs first: cached if what it makes comes out the same`];
    } else {
      planned.reasons = whyRun(ctx.store.lastMaterial(graph.pipeline, task.id), material);
    }
    if (note) planned.reasons.push(note);
    tasks.push(planned);
    byId.set(task.id, planned);
  }
  // every input that can be checked without running anything, before anything runs
  for (const planned of tasks) {
    if (planned.status !== 'run') continue;
    const task = graph.tasks.find((t) => t.id === planned.id)!;
    await ctx.steps.get(task.kind)!.preflight?.(planned.params, task.files, preflightContext(task, ctx));
  }
  if (selection.only) requireCachedDeps(tasks, selection.only);
  return { pipeline: graph.pipeline, tasks, materials };
}

/**
 * How each upstream enters the key: by its key, or by its output (early cutoff) when the step reads
 * only that. An output is known when the upstream's entry is there and will not be rebuilt; else
 * the key waits for the upstream (keyAfter: the first task up the graph that must run first).
 */
async function upstreamIdentities(task: TaskSpec, step: AnyStep, planned: Map<string, PlannedTask>, forced: Set<string>, store: CacheStore): Promise<{ upstream: KeyMaterial['upstream']; keyAfter?: string }> {
  const upstream: KeyMaterial['upstream'] = {};
  let keyAfter: string | undefined;
  for (const [role, id] of Object.entries(task.upstream)) {
    const up = planned.get(id)!;
    const read = cutoffRole(step, role);
    if (!read) {
      upstream[role] = { task: id, by: 'key', digest: up.key };
      keyAfter ??= up.keyAfter;
      continue;
    }
    const entry = up.key && up.cached && !forced.has(id) ? await store.get(up.key) : undefined;
    upstream[role] = { task: id, by: 'output', digest: entry ? outputIdentity(id, entry.meta, read) : '' };
    if (!entry) keyAfter ??= up.keyAfter ?? id;
  }
  return { upstream, keyAfter };
}

/**
 * The key of a task that waited for its upstreams' outputs (early cutoff), now that they are done:
 * its key material completed from their entries.
 */
export function settleKey(task: PlannedTask, spec: TaskSpec, step: AnyStep, material: KeyMaterial, entries: Map<string, CacheEntry>): string {
  for (const [role, id] of Object.entries(spec.upstream)) {
    const entry = entries.get(id)!;
    const read = cutoffRole(step, role);
    material.upstream[role] = read ? { task: id, by: 'output', digest: outputIdentity(id, entry.meta, read) } : { task: id, by: 'key', digest: entry.key };
  }
  task.key = taskKey(material);
  delete task.keyAfter;
  return task.key;
}

function whyRun(last: KeyMaterial | undefined, now: KeyMaterial): string[] {
  if (!last) return ['not built before'];
  const changes = describeChange(last, now);
  return changes.length ? changes : ['no cache entry for this key (cache cleaned, or built elsewhere)'];
}

function requireCachedDeps(tasks: PlannedTask[], only: string): void {
  const task = tasks.find((t) => t.id === only)!;
  const notCached = task.deps.filter((d) => !tasks.find((t) => t.id === d)!.cached);
  if (notCached.length) {
    const what = notCached.length > 1 ? `inputs ${notCached.join(', ')} are` : `input ${notCached[0]} is`;
    throw new GuestError('E_NOT_CACHED', `--only ${only}: its ${what} not cached (run gpu-guest build --until ${notCached[0]} first)`);
  }
}

function preflightContext(task: TaskSpec, ctx: PlanContext): PreflightContext {
  return { locations: task.locations ?? {}, sha256: (path) => ctx.memo.path(path), log: memoryLog(), signal: ctx.signal };
}

/**
 * A step's resolve() with the network when allowed (recording the answer in the cache), else from
 * the answer the last build recorded; without either the declared parameters stay, with a note.
 */
async function resolveParams(step: AnyStep, task: TaskSpec, ctx: PlanContext): Promise<{ params: JsonObject; note?: string }> {
  const id = sha256Hex(canonicalJson({ kind: task.kind, version: step.version, params: task.params }));
  const locked = ctx.lock?.tasks[task.id];
  if (locked && (step.resolve || step.lock)) {
    // recorded like a resolution: a later plan or offline build without the lock resolves as this build did
    if (ctx.network || ctx.offline) ctx.store.rememberResolution(id, locked.resolved);
    return { params: locked.resolved, note: 'resolved from the lock' };
  }
  if (!step.resolve) return { params: task.params };
  try {
    const params = (await step.resolve(task.params, task.files, { signal: ctx.signal, cacheDir: ctx.store.root, network: ctx.network })) as JsonObject;
    if (ctx.network) ctx.store.rememberResolution(id, params);
    return { params };
  } catch (err) {
    if (ctx.network || !isGuestError(err) || err.code !== 'E_NEEDS_NETWORK') throw err;
    const recorded = ctx.store.lastResolution(id);
    if (recorded) return { params: recorded, note: `resolved as the last build did (${ctx.offline ? '--offline' : 'plan does not contact mirrors'})` };
    if (ctx.offline) throw new GuestError('E_OFFLINE', `--offline: ${task.id}: ${err.message}, and no build recorded it in this cache (build once with the network, or pin the input)`, { cause: err });
    return { params: task.params, note: `${err.message}: resolved when the build runs (plan does not contact mirrors)` };
  }
}
