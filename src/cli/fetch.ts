import { existsSync } from 'node:fs';
import { resolve } from 'node:path';
import { GuestError } from '../model/errors.js';
import { sha256Hex, type JsonObject } from '../model/json.js';
import { checkLock, lockGraph, readCheckedLock, type LockFile } from '../engine/lock.js';
import type { LocalCacheStore } from '../engine/cache.js';
import { memoryLog } from '../sys/task-log.js';
import type { PinnedPackage } from '../sys/apt-private.js';
import { bundledPackages, importBundle, unpackBundle, writeBundle } from '../sys/bundle.js';
import { fetchIntoStore, type StoreFile } from '../sys/store.js';
import { checkOutputFile, openCache, type CliEnv, type Loaded, type PipelineOptions } from './context.js';
import { abortOnSignals } from './signals.js';
import { writeBundledPipeline } from '../pipeline/bundled.js';

export interface FetchOptions extends PipelineOptions {
  lock?: string;
  bundle?: string;
  /** An exported OpenPGP secret key (no passphrase) that signs the bundle instead of a key made for it. */
  signingKey?: string;
}

/**
 * gpu-guest fetch: every remote input the lock pins (resolved afresh without --lock) into the
 * cache's stores, each checked against its sha256; with --bundle, also into one bundle file.
 */
export async function fetchCommand(opts: FetchOptions, env: CliEnv): Promise<number> {
  const loaded = env.loadGraph(opts);
  const out = opts.bundle ? resolve(opts.bundle) : undefined;
  if (out) checkOutputFile('--bundle', out);
  if (opts.signingKey && !out) throw new GuestError('E_USAGE', '--signing-key signs a bundle: give --bundle FILE too');
  if (opts.signingKey && !existsSync(opts.signingKey)) throw new GuestError('E_USAGE', `--signing-key ${opts.signingKey}: no such file`);
  const { store } = openCache(opts, env.env, env.stderr);
  const signals = abortOnSignals(() => undefined);
  const log = memoryLog();
  try {
    const lock = await lockFor(opts, loaded, env, store.root, signals.signal);
    const files = storeFiles(lock, loaded, env);
    env.stderr(`fetching ${files.length} file(s) into ${store.root}\n`);
    const paths = await fetchIntoStore(store.root, files, { network: true, signal: signals.signal, offlineFix: '' });
    if (!out) {
      env.stdout(`fetched ${files.length} file(s) for ${lock.pipeline} into the cache\n`);
      return 0;
    }
    const bySha = new Map(bundledPackages(lock).map((p) => [p.sha256, p]));
    const downloads: { file: string; path: string }[] = [];
    const debs: { file: string; pkg: PinnedPackage }[] = [];
    files.forEach((f, i) => (f.path.startsWith('debs/') ? debs.push({ file: paths[i]!, pkg: bySha.get(f.sha256)! }) : downloads.push({ file: paths[i]!, path: f.path })));
    const scratch = await store.begin(sha256Hex(`bundle ${out}`));
    try {
      // the pipeline itself, with its local inputs: the machine without a network needs nothing else
      const carried = loaded.pipelineFile ? writeBundledPipeline(`${scratch.workDir}/bundle`, { file: loaded.pipelineFile, sets: opts.set, fragments: opts.fragment.map((f) => resolve(f)) }) : { path: undefined, notes: [] };
      for (const note of carried.notes) env.stderr(`note: ${note}\n`);
      const index = await writeBundle(out, `${scratch.workDir}/bundle`, { lock, downloads, debs, suite: rootfsSuite(loaded), signingKey: opts.signingKey ? resolve(opts.signingKey) : undefined, log, signal: signals.signal });
      const bytes = index.files.reduce((n, f) => n + f.size, 0);
      env.stdout(`wrote ${out}: ${index.files.length} files, ${(bytes / 2 ** 20).toFixed(1)} MiB (${carried.path ? `the pipeline ${carried.path} and its local inputs, ` : ''}the lock, ${downloads.length} download(s), a Debian repository of ${debs.length} locked package(s)); \`gpu-guest bundle verify ${out}\` checks it\n`);
    } finally {
      await store.discard(scratch);
    }
    return 0;
  } finally {
    signals.dispose();
  }
}

/** gpu-guest bundle verify: unpack into a scratch folder and check every file; nothing is kept. */
export async function bundleVerifyCommand(file: string, opts: { cacheDir?: string; json?: boolean; trustedKey?: string }, env: CliEnv): Promise<number> {
  const { store } = openCache({ set: [], fragment: [], outDir: 'out', cacheDir: opts.cacheDir }, env.env, env.stderr);
  const scratch = await store.begin(sha256Hex(`bundle verify ${file}`));
  try {
    const { index, lock, signedBy } = await unpackBundle(resolve(file), scratch.workDir, memoryLog(), undefined, opts.trustedKey ? resolve(opts.trustedKey) : undefined);
    const bytes = index.files.reduce((n, f) => n + f.size, 0);
    if (opts.json) env.stdout(`${JSON.stringify({ bundle: resolve(file), ok: true, pipeline: index.pipeline, files: index.files.length, bytes, packages: bundledPackages(lock).length, signedBy }, null, 2)}\n`);
    else env.stdout(`${file}: ${index.files.length} files verified (${(bytes / 2 ** 20).toFixed(1)} MiB), pipeline ${index.pipeline}, ${bundledPackages(lock).length} locked package(s), ${signatureWords(signedBy)}\n`);
    return 0;
  } finally {
    await store.discard(scratch);
  }
}

/**
 * build --bundle: the bundle checked whole, its files moved into the cache's stores, its lock
 * returned for the build to use (checked against the pipeline).
 */
export async function bundleForBuild(file: string, loaded: Loaded, env: CliEnv, store: LocalCacheStore, signal: AbortSignal, trustedKey?: string): Promise<LockFile> {
  const scratch = await store.begin(sha256Hex(`bundle ${file}`));
  try {
    const { index, lock, signedBy } = await unpackBundle(resolve(file), scratch.workDir, memoryLog(), signal, trustedKey ? resolve(trustedKey) : undefined);
    checkLock(`the lock in ${file}`, lock, loaded.graph, env.steps, loaded.sourceDate);
    const moved = importBundle(scratch.workDir, index, lock, store.root);
    env.stderr(`bundle ${file}: ${index.files.length} files verified, ${signatureWords(signedBy)}, ${moved} put into the cache\n`);
    return lock;
  } finally {
    await store.discard(scratch);
  }
}

function signatureWords(signedBy: 'trusted key' | 'bundled key' | 'unsigned'): string {
  return signedBy === 'trusted key' ? 'signed by the trusted key' : signedBy === 'bundled key' ? "signatures good against the bundle's own key (--trusted-key checks who made it)" : 'index not signed (an older bundle)';
}

async function lockFor(opts: FetchOptions, loaded: Loaded, env: CliEnv, cacheDir: string, signal: AbortSignal): Promise<LockFile> {
  if (!opts.lock) return lockGraph(loaded.graph, env.steps, loaded.sourceDate, { signal, cacheDir, network: true });
  return readCheckedLock(resolve(opts.lock), loaded.graph, env.steps, loaded.sourceDate);
}

/** Every task's store files with the lock's parameters (a task the lock does not name: as declared). */
function storeFiles(lock: LockFile, loaded: Loaded, env: CliEnv): StoreFile[] {
  const files = new Map<string, StoreFile>();
  for (const task of loaded.graph.tasks) {
    const step = env.steps.get(task.kind);
    const params = (lock.tasks[task.id]?.resolved ?? task.params) as JsonObject;
    for (const f of step?.downloads?.(params, task) ?? []) files.set(f.path, f);
  }
  return [...files.values()];
}

function rootfsSuite(loaded: Loaded): string | undefined {
  const rootfs = loaded.graph.tasks.find((t) => t.kind === 'rootfs');
  return rootfs ? String(rootfs.params.suite) : undefined;
}
