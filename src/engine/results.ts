import { GuestError } from '../model/errors.js';
import type { StepResults } from '../model/results.js';
import type { CacheEntry, CacheStore } from './cache.js';
import type { Plan } from './plan.js';

/** A cache entry with its step's result typed by kind. */
export interface TypedEntry<K extends keyof StepResults> {
  outDir: string;
  result: StepResults[K];
}

/** The entry's result as the step kind that made it declares it; an entry of another kind is refused. */
export function readResult<K extends keyof StepResults>(entry: CacheEntry, kind: K): TypedEntry<K> {
  if (entry.meta.kind !== kind) {
    throw new GuestError('E_NOT_CACHED', `cache entry ${entry.key.slice(0, 12)} was made by ${entry.meta.kind ?? 'an older gpu-guest'}, not by ${kind}: run gpu-guest build again`);
  }
  return { outDir: entry.outDir, result: entry.meta.result as StepResults[K] };
}

/** The built entry of the (first) task of a kind in a plan, typed; undefined when the plan has no such task or it is not built. */
export async function builtEntryOfKind<K extends keyof StepResults>(plan: Plan, store: CacheStore, kind: K): Promise<TypedEntry<K> | undefined> {
  const task = plan.tasks.find((t) => t.kind === kind);
  // no key yet: an upstream it is keyed by the output of must run first, so nothing of it is built
  const entry = task?.key ? await store.get(task.key) : undefined;
  return entry ? readResult(entry, kind) : undefined;
}
