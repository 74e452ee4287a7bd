import { resolve } from 'node:path';
import { GuestError } from '../model/errors.js';
import { formatBytes, listEntries, parseAge, parseSize, pruneCache, type EntryUsage } from '../engine/prune.js';
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
  return `${used}  ${formatBytes(e.bytes).padStart(10)}  ${e.key.slice(0, 12)}  ${e.kind.padEnd(16)} ${e.pipeline}/${e.task}`;
}

/** gpu-guest cache list: every entry with its size and last use, least recently used first. */
export async function cacheListCommand(opts: CacheOptions, env: CliEnv): Promise<number> {
  const root = resolve(opts.cacheDir ?? defaultCacheDir(env.env));
  const entries = listEntries(root);
  const total = entries.reduce((sum, e) => sum + e.bytes, 0);
  if (opts.json) {
    env.stdout(`${JSON.stringify({ cache: root, bytes: total, entries } as unknown as Json, null, 2)}\n`);
    return 0;
  }
  for (const e of entries) env.stdout(`${entryLine(e)}\n`);
  env.stdout(`${entries.length} entr${entries.length === 1 ? 'y' : 'ies'}, ${formatBytes(total)} in ${root}\n`);
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
  env.stdout(`${verb} ${report.removed.length} entr${report.removed.length === 1 ? 'y' : 'ies'} (${formatBytes(freed)}); ${formatBytes(report.keptBytes)} left in ${root}\n`);
  return 0;
}
