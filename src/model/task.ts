import type { Json, JsonObject } from './json.js';

/** One node of the task graph: what to run, with what, after what. Pure data. */
export interface TaskSpec {
  /** Task id, unique in the graph (`kernel-build`). */
  id: string;
  /** Step kind that runs it (a StepDefinition's kind). */
  kind: string;
  /**
   * The tasks whose results this one reads, by the role the step declares (`rootfs`, `debs` …):
   * the compiler wires roles to task ids, the step sees only roles.
   */
  upstream: { [role: string]: string };
  /** Canonical parameters: everything but local file paths. Part of the key. */
  params: JsonObject;
  /** Local input files by role; their content digests (not their paths) go into the key. */
  files: { [role: string]: string | string[] };
  /**
   * Local files used at run time whose identity is already in params (a pinned sha256): their
   * paths are not keyed, so moving the file does not rebuild anything.
   */
  locations?: { [role: string]: string };
  /** One line for `plan` and the progress view. */
  title: string;
}

export interface TaskGraph {
  /** Pipeline name: the folder under out/. */
  pipeline: string;
  /** Tasks in declaration order. */
  tasks: TaskSpec[];
}

/** The ids of the tasks a task depends on, in the order its roles are declared. */
export function taskDeps(task: Pick<TaskSpec, 'upstream'>): string[] {
  return [...new Set(Object.values(task.upstream))];
}

/**
 * How an upstream task enters a key. `key`: the upstream's own key (any change above reruns this
 * task). `output`: the digest of what the upstream produced, so an upstream rerun that yields the
 * same output leaves this task's key unchanged (early cutoff).
 */
export interface UpstreamIdentity {
  task: string;
  by: 'key' | 'output';
  digest: string;
}

/** Everything a task's key covers. Stored in the cache entry so `plan` can say what changed. */
export interface KeyMaterial {
  kind: string;
  stepVersion: number;
  params: JsonObject;
  /** Content digests of the input files, by role (file names, never machine paths). */
  inputs: { [role: string]: Json };
  /** The upstream tasks, by role. */
  upstream: { [role: string]: UpstreamIdentity };
}

/** How `plan` judges a task. */
export type PlanStatus = 'cached' | 'run' | 'skip';

export interface PlannedTask {
  id: string;
  kind: string;
  title: string;
  key: string;
  deps: string[];
  status: PlanStatus;
  /** Whether an entry for the key exists (a skipped or forced task may be cached too). */
  cached: boolean;
  /** `--force` selected this task (or a task it depends on): it runs even when cached. */
  forced: boolean;
  /** Why it must run (`parameter kernel.version changed`, `forced`, `not built before`) or why skipped. */
  reasons: string[];
  /** Parameters after resolution (the exact kernel version a range resolved to …). */
  params: JsonObject;
  /** Parameters resolve() added or changed (the exact version a range resolved to …). */
  resolved: JsonObject;
  /** Input files by role, with their digests. */
  inputs: { [role: string]: Json };
  /**
   * Set while the key cannot be known yet: it depends on the output of this upstream task, which
   * runs first (early cutoff). The key is made, and the cache asked again, once that task is done.
   */
  keyAfter?: string;
}

export type TaskEndStatus = 'succeeded' | 'cached' | 'failed' | 'cancelled' | 'skipped';

export interface TaskResult {
  id: string;
  status: TaskEndStatus;
  durationMs: number;
  key: string;
}
