import { resolve } from 'node:path';
import { GuestError } from '../model/errors.js';
import { formatBytes, isStoreFile, listEntries, listStoreFiles, parseAge, parseSize, pruneCache, STORES, type EntryUsage } from '../engine/prune.js';
import { defaultCacheDir } from '../paths.js';
import type { Json } from '../model/json.js';
import type { CliEnv } from './context.js';

export interface CacheOptions {
  cacheDir?: string;
  json?: boolean;
}

export interface PruneOptions extends CacheOptions {
  olderThan?: string;
  maxSize?: string;
  dryRun?: boolean;
}

function entryLine(e: EntryUsage): string {
  const used = e.lastUsedMs ? new Date(e.lastUsedMs).toISOString().slice(0, 16).replace('T', ' ') : 'never         ';
  // a store file is named by its path: its sha256 leads the name
  const what = isStoreFile(e) ? e.key : `${e.key.slice(0, 12)}  ${e.kind.padEnd(16)} ${e.pipeline}/${e.task}`;
  return `${used}  ${formatBytes(e.bytes).padStart(10)}  ${what}`;
}

/** gpu-guest cache list: every entry with its size and last use, least recently used first. */
export async function cacheListCommand(opts: CacheOptions, env: CliEnv): Promise<number> {
  const root = resolve(opts.cacheDir ?? defaultCacheDir(env.env));
  const entries = listEntries(root);
  const files = listStoreFiles(root);
  // the stores, each summed: a lock's hundreds of .debs would drown the entries
  const stores = STORES.map((store) => {
    const of = files.filter((f) => f.pipeline === store);
    return { store, files: of.length, bytes: of.reduce((sum, f) => sum + f.bytes, 0), lastUsedMs: Math.max(0, ...of.map((f) => f.lastUsedMs)) };
  });
  const total = entries.reduce((sum, e) => sum + e.bytes, 0) + stores.reduce((sum, s) => sum + s.bytes, 0);
  if (opts.json) {
    env.stdout(`${JSON.stringify({ cache: root, bytes: total, entries, stores } as unknown as Json, null, 2)}\n`);
    return 0;
  }
  for (const e of entries) env.stdout(`${entryLine(e)}\n`);
  for (const s of stores.filter((x) => x.files)) env.stdout(`${new Date(s.lastUsedMs).toISOString().slice(0, 16).replace('T', ' ')}  ${formatBytes(s.bytes).padStart(10)}  ${`${s.store}/`.padEnd(12)}  ${s.files} stored file${s.files === 1 ? '' : 's'} (fetched inputs; cache prune removes them by last use too)\n`);
  env.stdout(`${entries.length} entr${entries.length === 1 ? 'y' : 'ies'}${files.length ? ` and ${files.length} stored file${files.length === 1 ? '' : 's'}` : ''}, ${formatBytes(total)} in ${root}\n`);
  return 0;
}

/** gpu-guest cache prune: removes entries unused for --older-than, then the least recently used beyond --max-size. */
export async function cachePruneCommand(opts: PruneOptions, env: CliEnv): Promise<number> {
  if (opts.olderThan === undefined && opts.maxSize === undefined) throw new GuestError('E_USAGE', 'cache prune: give --older-than AGE (e.g. 14d) and/or --max-size SIZE (e.g. 40G); to empty the cache use gpu-guest clean --cache');
  const olderThanMs = opts.olderThan === undefined ? undefined : parseAge(opts.olderThan);
  if (opts.olderThan !== undefined && olderThanMs === undefined) throw new GuestError('E_USAGE', `--older-than ${opts.olderThan}: expected a number of days, hours or minutes such as 14d, 12h or 30m`);
  const maxBytes = opts.maxSize === undefined ? undefined : parseSize(opts.maxSize);
  if (opts.maxSize !== undefined && maxBytes === undefined) throw new GuestError('E_USAGE', `--max-size ${opts.maxSize}: expected a size such as 40G, 500M or 1.5T`);
  const root = resolve(opts.cacheDir ?? defaultCacheDir(env.env));
  const report = pruneCache(root, { olderThanMs, maxBytes, dryRun: opts.dryRun });
  const freed = report.removed.reduce((sum, e) => sum + e.bytes, 0);
  if (opts.json) {
    env.stdout(`${JSON.stringify({ cache: root, dryRun: Boolean(opts.dryRun), removed: report.removed, busy: report.busy, freedBytes: freed, keptBytes: report.keptBytes } as unknown as Json, null, 2)}\n`);
    return 0;
  }
  const verb = opts.dryRun ? 'would remove' : 'removed';
  for (const e of report.removed) env.stdout(`${verb} ${entryLine(e)}\n`);
  for (const b of report.busy) env.stdout(`kept ${entryLine(b.entry)}: ${b.why}\n`);
  const stored = report.removed.filter(isStoreFile).length;
  const entryCount = report.removed.length - stored;
  env.stdout(`${verb} ${entryCount} entr${entryCount === 1 ? 'y' : 'ies'}${stored ? ` and ${stored} stored file${stored === 1 ? '' : 's'}` : ''} (${formatBytes(freed)}); ${formatBytes(report.keptBytes)} left in ${root}\n`);
  return 0;
}
