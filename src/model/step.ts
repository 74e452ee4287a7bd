import type { StoreFile } from '../sys/store.js';
import type { Json, JsonObject } from './json.js';
import type { KeyMaterial, TaskSpec } from './task.js';

/** Where a step writes its narration and its commands' output. */
export interface StepLog {
  /** Raw output of a process. */
  write(chunk: string | Buffer): void;
  /** One line of the step's own narration. */
  info(line: string): void;
  /** The last n lines written. */
  tail(n: number): string[];
}

/** An upstream task's entry as a step sees it. */
export interface UpstreamOutput<R extends JsonObject = JsonObject> {
  /** The upstream entry's out/ folder (read-only). */
  dir: string;
  /** What the upstream step returned. */
  result: R;
}

/** A committed entry of the local cache, as a step may read it (never write there: entries are immutable). */
export interface EarlierEntry {
  key: string;
  outDir: string;
  material: KeyMaterial;
  result: JsonObject;
}

/** The upstream roles a step reads, each with the result type it expects. */
export type UpstreamResults = { [role: string]: JsonObject | undefined };

/** What a running step may use. It writes only under outDir (kept) and workDir (thrown away). */
export interface StepContext<P extends object = JsonObject, U extends UpstreamResults = UpstreamResults> {
  task: TaskSpec;
  /** This task's cache key. */
  key: string;
  params: P;
  /** Local input files by role, as absolute paths. */
  files: TaskSpec['files'];
  /** Local files identified by a pinned sha256 in params (see TaskSpec.locations). */
  locations: { [role: string]: string };
  /** Becomes the cache entry's out/ folder when the step succeeds. */
  outDir: string;
  /** Scratch space, deleted after the task. */
  workDir: string;
  /** Outputs of the tasks this one reads, by role. */
  upstream: { [K in keyof U]: UpstreamOutput<NonNullable<U[K]>> };
  log: StepLog;
  /** Aborted on Ctrl-C / SIGTERM or when the run is cancelled: stop, clean up, throw. */
  signal: AbortSignal;
  /** Reports progress (bytes downloaded …) to the progress view. */
  progress(label: string, done: number, total?: number): void;
  /**
   * The local cache's committed entries of a step kind, another build's included: a kernel build
   * starts from the object tree of the nearest earlier one. Reads only.
   */
  earlier(kind: string): Promise<EarlierEntry[]>;
  /** The cache folder, for steps that keep shared state there (stale mount records …). */
  cacheDir: string;
  /** Seconds since the epoch: the one date stamped into artifacts. */
  sourceDate: number;
  /**
   * False under `build --offline`: a step that would reach the network throws E_OFFLINE before
   * trying (sys/offline's requireNetwork). Cached downloads and local files stay usable.
   */
  network: boolean;
}

/** Context for resolve(): reads allowed, nothing written outside the cache. */
export interface ResolveContext {
  signal: AbortSignal;
  cacheDir: string;
  /**
   * Whether resolution may use the network. `plan` never does (it reuses the resolution the last
   * build recorded, else says the task resolves at build time); `--offline` never does.
   */
  network: boolean;
}

/** What a step's preflight may use: reads only, no network, nothing written. */
export interface PreflightContext {
  /** Local files identified by a pinned sha256 in params (see TaskSpec.locations). */
  locations: { [role: string]: string };
  /** sha256 of a local file, remembered by path, size, mtime and inode (a 100 MB .run is hashed once). */
  sha256(path: string): Promise<string>;
  /** Where the commands a check runs (dpkg-deb -f …) write their output; kept in memory. */
  log: StepLog;
  signal: AbortSignal;
}

/**
 * One step kind. Steps never import each other: the engine hands them their upstream results by
 * role, typed by U, and records what run() returns (R) for the steps and commands downstream.
 */
/** What of an upstream a step reads, for early cutoff (see StepDefinition.cutoff). */
export interface CutoffRole {
  files?: string[];
  result?: boolean;
}

export interface StepDefinition<P extends object = JsonObject, U extends UpstreamResults = UpstreamResults, R extends JsonObject = JsonObject> {
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
   * Early cutoff: upstream roles keyed by what the upstream produced instead of by its key, so an
   * upstream rerun that yields the same output leaves this task cached. Per role (or `*` for every
   * role): the output files this step reads of it (all digested outputs when absent), and whether
   * it reads the upstream's result too. The step must read nothing else of that upstream.
   */
  cutoff?: { [role: string]: CutoffRole };
  /**
   * Turns declared parameters into exact ones before keying, e.g. a version range into the
   * version a mirror lists. The result replaces params and shows in `plan`. Throws
   * E_NEEDS_NETWORK when it cannot resolve without the network and ctx.network is false.
   */
  resolve?(params: P, files: TaskSpec['files'], ctx: ResolveContext): Promise<P>;
  /**
   * For `gpu-guest lock`: pins what the resolved parameters still leave to the mirror at build time
   * (the exact package set a mirror gives now, each .deb by sha256). Needs the network. The result
   * is recorded in the lock and replaces params in `build --lock`; run() must then use exactly it.
   * `upstream`: the locked parameters of the lockable tasks this one reads, by role.
   */
  lock?(params: P, files: TaskSpec['files'], ctx: ResolveContext, upstream: { [role: string]: JsonObject }): Promise<P>;
  /**
   * The remote files run() would fetch with these (resolved or locked) parameters, where the cache
   * keeps them (sys/store): `gpu-guest fetch` gathers them into a bundle, `build --bundle` puts them
   * back. None when the task's inputs are local.
   */
  downloads?(params: P, task: TaskSpec): StoreFile[];
  /**
   * The parameters that identify the result, for the key. Default: all of them. Where to fetch an
   * input from (a mirror list) is not its identity when its sha256 is known.
   */
  identity?(params: P): JsonObject;
  /**
   * Checks everything about the task's own inputs that needs no task to run — files present,
   * pinned sha256s, archive stubs, package sets, fragment syntax — so a bad input fails in seconds
   * at `plan` and at the start of `build`, not after a kernel build. Reads only.
   */
  preflight?(params: P, files: TaskSpec['files'], ctx: PreflightContext): Promise<void>;
  /** Does the work; returns data recorded in the entry (read back by downstream steps). */
  run(ctx: StepContext<P, U>): Promise<R>;
}

/** A step of any types, as the engine holds it. */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type AnyStep = StepDefinition<any, any, any>;

export type StepRegistry = Map<string, AnyStep>;

export function createStepRegistry(steps: AnyStep[]): StepRegistry {
  return new Map(steps.map((s) => [s.kind, s]));
}

export type { Json };
