import type { Json, TaskSpec } from '../engine/types.js';
import type { TaskLog } from '../sys/task-log.js';

/** What a running step may use. It writes only under outDir (kept) and workDir (thrown away). */
export interface StepContext {
  task: TaskSpec;
  /** This task's cache key. */
  key: string;
  params: TaskSpec['params'];
  /** Local input files by role, as absolute paths. */
  files: TaskSpec['files'];
  /** Local files identified by a pinned sha256 in params (see TaskSpec.locations). */
  locations: { [role: string]: string };
  /** Becomes the cache entry's out/ folder when the step succeeds. */
  outDir: string;
  /** Scratch space, deleted after the task. */
  workDir: string;
  /** Outputs of the tasks this one depends on, by task id. */
  upstream: { [id: string]: UpstreamOutput };
  log: TaskLog;
  /** Aborted on Ctrl-C / SIGTERM or when the run is cancelled: stop, clean up, throw. */
  signal: AbortSignal;
  /** Reports progress (bytes downloaded …) to the progress view. */
  progress(label: string, done: number, total?: number): void;
  /** The cache folder, for steps that keep shared state there (stale mount records …). */
  cacheDir: string;
  /** Seconds since the epoch: the one date stamped into artifacts. */
  sourceDate: number;
}

export interface UpstreamOutput {
  /** The upstream entry's out/ folder (read-only). */
  dir: string;
  /** What the upstream step returned. */
  result: { [key: string]: Json };
}

/** Context for resolve(): I/O allowed, but nothing written outside the cache. */
export interface ResolveContext {
  signal: AbortSignal;
  cacheDir: string;
  /** `--offline`: resolution must not use the network. */
  offline: boolean;
}

/** One step kind. Steps never import each other: the engine hands them their upstream outputs. */
export interface StepDefinition {
  kind: string;
  /** Bump when the step's logic changes what it produces: it changes every key of this kind. */
  version: number;
  /** `cpu: 'all'` steps never overlap each other (a kernel build uses every core). Default 1. */
  resources: { cpu: 'all' | 1 };
  /** Folder under out/<pipeline>/ where the outputs are laid out; none when absent. */
  publish?: string;
  /** Output paths (prefixes) not digested into the entry's metadata (a whole kernel tree). */
  undigested?: string[];
  /**
   * Turns declared parameters into exact ones before keying, e.g. a version range into the
   * version a mirror lists. The result replaces params and shows in `plan`.
   */
  resolve?(params: TaskSpec['params'], files: TaskSpec['files'], ctx: ResolveContext): Promise<TaskSpec['params']>;
  /**
   * The parameters that identify the result, for the key. Default: all of them. Where to fetch an
   * input from (a mirror list) is not its identity when its sha256 is known.
   */
  identity?(params: TaskSpec['params']): TaskSpec['params'];
  /** Does the work; returns data recorded in the entry (read back by downstream steps). */
  run(ctx: StepContext): Promise<{ [key: string]: Json } | void>;
}

export type StepRegistry = Map<string, StepDefinition>;

export function createStepRegistry(steps: StepDefinition[]): StepRegistry {
  return new Map(steps.map((s) => [s.kind, s]));
}
