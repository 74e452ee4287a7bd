import { existsSync, lstatSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { GuestError } from '../model/errors.js';
import { isCacheFolder, lockHolderAlive, nothingMountedUnder, type EntryMeta } from './cache.js';

/** One cache entry (or a file of the cache's stores) as `cache list` and `cache prune` see it. */
export interface EntryUsage {
  /** The entry's key; for a store file its path in the cache (`debs/<sha256>_<file>`). */
  key: string;
  task: string;
  kind: string;
  pipeline: string;
  /** Bytes on disk (allocated blocks), the entry's out/ folder and meta together. */
  bytes: number;
  /** Last time a build or verify used the entry (meta.json's mtime), in ms since the epoch. */
  lastUsedMs: number;
}

/** Disk usage of a folder tree: allocated blocks, each hard-linked file counted once. */
function diskBytes(dir: string, seen = new Set<string>()): number {
  let total = 0;
  for (const name of readdirSync(dir)) {
    const path = join(dir, name);
    const st = lstatSync(path);
    const id = `${st.dev}:${st.ino}`;
    if (seen.has(id)) continue;
    seen.add(id);
    total += st.blocks * 512;
    if (st.isDirectory()) total += diskBytes(path, seen);
  }
  return total;
}

/** Every entry of the cache with its size and last use, least recently used first. */
export function listEntries(root: string): EntryUsage[] {
  if (!existsSync(join(root, 'entries'))) return [];
  assertCacheFolder(root);
  return readdirSync(join(root, 'entries'))
    .map((key) => {
      const dir = join(root, 'entries', key);
      const metaFile = join(dir, 'meta.json');
      let meta: Partial<EntryMeta> = {};
      try {
        meta = JSON.parse(readFileSync(metaFile, 'utf8')) as EntryMeta;
      } catch {
        // an entry without readable metadata is unusable: it is listed as such and pruned first
      }
      return {
        key,
        task: meta.task ?? '?',
        kind: meta.kind ?? 'unreadable',
        pipeline: meta.pipeline ?? '?',
        bytes: diskBytes(dir),
        lastUsedMs: existsSync(metaFile) ? statSync(metaFile).mtimeMs : 0,
      };
    })
    .sort((a, b) => a.lastUsedMs - b.lastUsedMs || a.key.localeCompare(b.key));
}

/** The cache's stores of fetched inputs: downloads (tarballs, .run files) and locked .debs. */
export const STORES = ['downloads', 'debs'] as const;

/**
 * Every file of the cache's stores with its size and last use (its mtime: a build that reuses a
 * stored file touches it), least recently used first. Kind `download` or `deb`.
 */
export function listStoreFiles(root: string): EntryUsage[] {
  const out: EntryUsage[] = [];
  for (const store of STORES) {
    const dir = join(root, store);
    if (!existsSync(dir)) continue;
    for (const name of readdirSync(dir)) {
      const st = lstatSync(join(dir, name));
      if (!st.isFile()) continue;
      out.push({ key: `${store}/${name}`, task: name, kind: store === 'debs' ? 'deb' : 'download', pipeline: store, bytes: st.blocks * 512, lastUsedMs: st.mtimeMs });
    }
  }
  return out.sort((a, b) => a.lastUsedMs - b.lastUsedMs || a.key.localeCompare(b.key));
}

export interface PruneLimits {
  /** Remove entries not used for this long. */
  olderThanMs?: number;
  /** Then remove the least recently used until the entries take at most this many bytes. */
  maxBytes?: number;
  dryRun?: boolean;
  now?: number;
}

export interface PruneReport {
  removed: EntryUsage[];
  /** Entries kept although the limits asked for their removal: a live build holds them, or something is mounted below. */
  busy: { entry: EntryUsage; why: string }[];
  keptBytes: number;
}

export function isStoreFile(entry: EntryUsage): boolean {
  return entry.kind === 'deb' || entry.kind === 'download';
}

/** Why an entry must not be removed now, if it must not. */
function busyReason(root: string, entry: EntryUsage): string | undefined {
  if (isStoreFile(entry)) return /\.part$/.test(entry.key) && Date.now() - entry.lastUsedMs < 3_600_000 ? 'a download in progress' : undefined;
  const lock = join(root, 'locks', `${entry.key}.lock`);
  if (existsSync(lock)) {
    try {
      const holder = JSON.parse(readFileSync(lock, 'utf8')) as { pid: number; host: string };
      if (lockHolderAlive(holder)) return `locked by process ${holder.pid} on ${holder.host}`;
    } catch {
      return 'its lock is being taken';
    }
  }
  if (!nothingMountedUnder(join(root, 'entries', entry.key))) return 'something is mounted below it';
  return undefined;
}

/**
 * Removes entries and store files by age and then by size, least recently used first, never an
 * entry a live build has locked or one with a mount below it, nor a download still being written.
 * Indexes and resolutions stay: they only explain plans.
 */
export function pruneCache(root: string, limits: PruneLimits): PruneReport {
  const entries = [...listEntries(root), ...listStoreFiles(root)].sort((a, b) => a.lastUsedMs - b.lastUsedMs || a.key.localeCompare(b.key));
  const now = limits.now ?? Date.now();
  const report: PruneReport = { removed: [], busy: [], keptBytes: 0 };
  let total = entries.reduce((sum, e) => sum + e.bytes, 0);
  for (const entry of entries) {
    const tooOld = limits.olderThanMs !== undefined && now - entry.lastUsedMs > limits.olderThanMs;
    const tooBig = limits.maxBytes !== undefined && total > limits.maxBytes;
    if (!tooOld && !tooBig) continue;
    const why = busyReason(root, entry);
    if (why) {
      report.busy.push({ entry, why });
      continue;
    }
    if (!limits.dryRun) rmSync(isStoreFile(entry) ? join(root, entry.key) : join(root, 'entries', entry.key), { recursive: true, force: true });
    report.removed.push(entry);
    total -= entry.bytes;
  }
  report.keptBytes = total;
  return report;
}

function assertCacheFolder(root: string): void {
  if (!isCacheFolder(root)) {
    throw new GuestError('E_CLEAN_REFUSED', `refusing to prune ${root}: it is not a gpu-guest cache (no CACHEDIR.TAG written by gpu-guest); check --cache-dir`);
  }
}

/** `14d`, `12h`, `30m`: a duration in ms; undefined when it does not parse. */
export function parseAge(text: string): number | undefined {
  const m = /^(\d+(?:\.\d+)?)\s*(d|h|m)$/.exec(text.trim());
  if (!m) return undefined;
  return Number(m[1]) * { d: 86_400_000, h: 3_600_000, m: 60_000 }[m[2] as 'd' | 'h' | 'm'];
}

/** `40G`, `500M`, `1.5T` (binary units): bytes; undefined when it does not parse. */
export function parseSize(text: string): number | undefined {
  const m = /^(\d+(?:\.\d+)?)\s*([KMGT])i?B?$/i.exec(text.trim());
  if (!m) return undefined;
  return Math.round(Number(m[1]) * 1024 ** ('KMGT'.indexOf(m[2]!.toUpperCase()) + 1));
}

export function formatBytes(bytes: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let v = bytes;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${i === 0 ? v : v.toFixed(1)} ${units[i]}`;
}
