import { dirname, join, resolve } from 'node:path';
import { existsSync, mkdirSync, statSync, writeFileSync, rmSync } from 'node:fs';
import { recoverStaleMounts } from '../sys/chroot.js';
import { unusableFolderReason } from '../sys/usable-path.js';
import { GuestError } from '../model/errors.js';
import { LocalCacheStore } from '../engine/cache.js';
import { DigestMemo } from '../engine/digest.js';
import type { TaskGraph } from '../model/task.js';
import { compileTaskGraph, sourceDateEpoch } from '../pipeline/compile.js';
import { loadPipeline } from '../pipeline/load.js';
import { expandFragments } from '../sys/kconfig/fragments.js';
import { defaultCacheDir } from '../paths.js';
import type { StepRegistry } from '../model/step.js';
import type { MatrixCombination } from '../pipeline/matrix.js';

/** Options every pipeline command shares (build, plan, clean, doctor). */
export interface PipelineOptions {
  vendor?: string;
  pipeline?: string;
  set: string[];
  fragment: string[];
  cacheDir?: string;
  outDir: string;
}

/** What a command works on once the pipeline is loaded and compiled. */
export interface Loaded {
  graph: TaskGraph;
  sourceDate: number;
  /** out/<pipeline>/ */
  pipelineOut: string;
  /** The pipeline's matrix combinations (none without a matrix:). */
  combinations?: MatrixCombination[];
  /** The pipeline file it was loaded from (for the manifest's provenance). */
  pipelineFile?: string;
}

/** How the CLI turns options into a task graph; tests substitute their own step kinds and graphs. */
export type GraphLoader = (opts: PipelineOptions) => Loaded;

/** The CLI's dependencies, injected so tests can capture output and add test-only steps. */
export interface CliEnv {
  steps: StepRegistry;
  loadGraph: GraphLoader;
  stdout: (text: string) => void;
  stderr: (text: string) => void;
  isTTY: boolean;
  env: NodeJS.ProcessEnv;
}

export const loadFromPipelineFile: GraphLoader = (opts) => {
  const loaded = loadPipeline({ vendor: opts.vendor, file: opts.pipeline, sets: opts.set });
  const extraFragments = opts.fragment.map((f) => resolve(f));
  // a --fragment is an input named on the command line: checked now, like the pipeline's own paths
  expandFragments(extraFragments);
  const graph = compileTaskGraph(loaded.pipeline, { extraFragments });
  return { graph, sourceDate: sourceDateEpoch(loaded.pipeline), pipelineOut: resolve(opts.outDir, loaded.pipeline.name), combinations: loaded.combinations, pipelineFile: loaded.file };
};

export function openCache(opts: PipelineOptions, env: NodeJS.ProcessEnv, say?: (line: string) => void): { store: LocalCacheStore; memo: DigestMemo } {
  const root = resolve(opts.cacheDir ?? defaultCacheDir(env));
  // mounts of chroot sessions whose process was killed outright: remove them (and say so) before
  // anything else, so that the scratch sweep below can delete their folders
  if (existsSync(root)) {
    const removed = recoverStaleMounts(root);
    if (removed.length) say?.(`removed ${removed.length} stale mount(s) left by a killed gpu-guest:\n${removed.map((r) => `  ${r}`).join('\n')}\n`);
  }
  const store = LocalCacheStore.open(root);
  return { store, memo: new DigestMemo(join(root, 'digests.json')) };
}

/**
 * The cache for `plan`, which must never change the host: no folder created, no stale mount
 * removed, no scratch folder swept, no digest memo written.
 */
export function openCacheReadOnly(opts: PipelineOptions, env: NodeJS.ProcessEnv): { store: LocalCacheStore; memo: DigestMemo } {
  const root = resolve(opts.cacheDir ?? defaultCacheDir(env));
  return { store: LocalCacheStore.openReadOnly(root), memo: new DigestMemo(join(root, 'digests.json'), { readOnly: true }) };
}

/** A file a flag names for gpu-guest to write (--summary, --lock, --bundle): its folder must exist, and it must not be a folder. Said before any work. */
export function checkOutputFile(flag: string, file: string): void {
  const dir = dirname(resolve(file));
  if (!existsSync(dir) || !statSync(dir).isDirectory()) throw new GuestError('E_USAGE', `${flag} ${file}: folder ${dir} does not exist (create it, or name a file in an existing folder)`);
  if (existsSync(file) && statSync(file).isDirectory()) throw new GuestError('E_USAGE', `${flag} ${file}: is a folder (name a file)`);
}

const OUT_MARKER = '.gpu-guest-out';

/** Whether gpu-guest made this out folder (or pipeline folder under it): `clean` removes only those. */
export function isOutFolder(dir: string): boolean {
  return existsSync(join(dir, OUT_MARKER));
}

/** Fails at once, creating nothing, when the out folder could not be made or written. */
export function assertOutUsable(pipelineOut: string): void {
  const why = unusableFolderReason(pipelineOut);
  if (why) throw new GuestError('E_OUT_UNWRITABLE', `output folder ${pipelineOut} is not writable (${why}): pass --out-dir DIR or fix its permissions`);
}

/** Creates out/<pipeline>/logs, proves it can be written, and marks both folders as gpu-guest's. */
export function prepareOut(pipelineOut: string): string {
  const logs = join(pipelineOut, 'logs');
  assertOutUsable(pipelineOut);
  try {
    mkdirSync(logs, { recursive: true });
    const probe = join(logs, `.probe-${process.pid}`);
    writeFileSync(probe, '');
    rmSync(probe);
    const marker = 'made by gpu-guest: `gpu-guest clean` may remove this folder\n';
    for (const dir of [pipelineOut, dirname(pipelineOut)]) if (!isOutFolder(dir)) writeFileSync(join(dir, OUT_MARKER), marker);
  } catch (err) {
    throw new GuestError('E_OUT_UNWRITABLE', `output folder ${pipelineOut} is not writable (${(err as NodeJS.ErrnoException).code}): pass --out-dir DIR or fix its permissions`, { cause: err });
  }
  return logs;
}
