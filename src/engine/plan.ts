import { GuestError } from '../errors.js';
import type { StepRegistry } from '../steps/types.js';
import type { CacheStore } from './cache.js';
import type { DigestMemo } from './digest.js';
import type { PlannedTask } from './events.js';
import { ancestorsOf, descendantsOf, requireTask, topoOrder } from './graph.js';
import { canonicalJson, describeChange, taskKey, type KeyMaterial } from './key.js';
import type { TaskGraph } from './types.js';

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
  offline?: boolean;
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

  const keys = new Map<string, string>();
  const materials = new Map<string, KeyMaterial>();
  const tasks: PlannedTask[] = [];
  for (const task of order) {
    const step = ctx.steps.get(task.kind);
    if (!step) throw new GuestError('E_UNKNOWN_STEP', `task ${task.id} uses step kind ${task.kind}, which this gpu-guest does not have`);
    const params = step.resolve ? await step.resolve(task.params, task.files, { signal: ctx.signal, cacheDir: ctx.store.root, offline: ctx.offline ?? false }) : task.params;
    const material: KeyMaterial = {
      kind: task.kind,
      stepVersion: step.version,
      params: step.identity ? step.identity(params) : params,
      inputs: await ctx.memo.inputs(task.files),
      upstream: Object.fromEntries(task.deps.map((d) => [d, keys.get(d)!])),
    };
    const key = taskKey(material);
    keys.set(task.id, key);
    materials.set(task.id, material);
    const cached = (await ctx.store.get(key)) !== undefined;
    const resolved = Object.fromEntries(Object.entries(params).filter(([k, v]) => canonicalJson(v) !== canonicalJson(task.params[k] ?? null)));
    const planned: PlannedTask = { id: task.id, kind: task.kind, title: task.title, key, deps: task.deps, params, resolved, inputs: material.inputs, status: 'run', cached, reasons: [] };
    if (wanted && !wanted.has(task.id)) {
      planned.status = 'skip';
      planned.reasons = [selection.only ? `not selected (--only ${selection.only})` : `after --until ${selection.until}`];
    } else if (forced.has(task.id)) {
      planned.reasons = [(selection.force ?? []).includes(task.id) ? 'forced' : 'forced (depends on a forced task)'];
    } else if (cached) {
      planned.status = 'cached';
    } else {
      planned.reasons = whyRun(ctx.store.lastMaterial(graph.pipeline, task.id), material);
    }
    tasks.push(planned);
  }
  if (selection.only) requireCachedDeps(tasks, selection.only);
  ctx.memo.save();
  return { pipeline: graph.pipeline, tasks, materials };
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
