import { randomBytes } from 'node:crypto';
import { constants, existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { open, readdir, readFile, rename, rm, stat, utimes, writeFile } from 'node:fs/promises';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { GuestError, messageOf } from '../model/errors.js';
import { mountsUnder } from '../sys/mounts.js';
import { processAlive } from '../sys/process.js';
import { unusableFolderReason } from '../sys/usable-path.js';
import type { JsonObject } from '../model/json.js';
import type { KeyMaterial } from '../model/task.js';

/** What a cache entry records next to the task's outputs. */
export interface EntryMeta {
  key: string;
  task: string;
  /** The step kind that made it: results are read back by kind (see readResult). */
  kind: string;
  pipeline: string;
  material: KeyMaterial;
  /** Data the step returned (resolved versions, package names …). */
  result: JsonObject;
  /** sha256 of every output file, by path relative to the entry's out/ folder. */
  outputs: { [path: string]: string };
  durationMs: number;
}

export interface CacheEntry {
  key: string;
  /** The task's outputs. Never write here: entries are immutable. */
  outDir: string;
  meta: EntryMeta;
}

/** A task's private place to write while it runs; it becomes the entry only by commit(). */
export interface Scratch {
  key: string;
  /** Becomes the entry's out/ folder. */
  outDir: string;
  /** Thrown away after the task, whatever happens. */
  workDir: string;
  root: string;
}

/**
 * Where task outputs live between runs. The engine sees only this interface, so a shared remote
 * store (HTTP GET/PUT of content-addressed objects) can stand behind it later.
 */
export interface CacheStore {
  readonly root: string;
  get(key: string): Promise<CacheEntry | undefined>;
  /** The committed entries of a step kind in the local cache (never the remote's), without marking them used. */
  entriesOf(kind: string): Promise<CacheEntry[]>;
  /** Holds the key's lock until the returned release() runs; onWait hears who holds it meanwhile. */
  lock(key: string, onWait: (holder: string) => void, signal?: AbortSignal): Promise<() => Promise<void>>;
  begin(key: string): Promise<Scratch>;
  /** Turns the scratch into the entry with one atomic rename. */
  commit(scratch: Scratch, meta: EntryMeta): Promise<CacheEntry>;
  discard(scratch: Scratch): Promise<void>;
  /** The key material a task of a pipeline had the last time it was built or used, to explain changes. */
  lastMaterial(pipeline: string, task: string): KeyMaterial | undefined;
  rememberMaterial(pipeline: string, task: string, material: KeyMaterial): void;
  /** What a step's resolve() answered for declared parameters, recorded by the last build (plan reads it). */
  lastResolution(id: string): JsonObject | undefined;
  rememberResolution(id: string, params: JsonObject): void;
}

/** Cache in a local folder: entries/<key>/{meta.json,out/}, tmp/ for scratch, locks/ for key locks. */
export class LocalCacheStore implements CacheStore {
  constructor(
    readonly root: string,
    private readonly readOnly = false,
  ) {}

  /** Creates the folders and proves the cache can be written, before any task runs. */
  static open(root: string): LocalCacheStore {
    assertUsableCache(root);
    try {
      for (const sub of ['entries', 'tmp', 'locks', 'index']) mkdirSync(join(root, sub), { recursive: true });
      // the standard cache-directory tag: backup tools skip the folder, and `clean --cache` knows it is ours
      if (!isCacheFolder(root)) writeFileSync(join(root, 'CACHEDIR.TAG'), `${CACHEDIR_SIGNATURE}\n# gpu-guest's cache: \`gpu-guest clean --cache\` empties it\n`);
      const probe = join(root, 'tmp', `.probe-${process.pid}`);
      writeFileSync(probe, '');
      readdirSync(join(root, 'tmp'));
      rmSync(probe, { force: true });
    } catch (err) {
      throw new GuestError('E_CACHE_UNWRITABLE', `cache folder ${root} is not writable (${(err as NodeJS.ErrnoException).code ?? messageOf(err)}): pass --cache-dir DIR or fix its permissions`, { cause: err });
    }
    const store = new LocalCacheStore(root);
    store.sweepScratch();
    return store;
  }

  /**
   * The cache as `plan` sees it: nothing is created, swept or unmounted. A folder that does not
   * exist is an empty cache.
   */
  static openReadOnly(root: string): LocalCacheStore {
    assertUsableCache(root);
    return new LocalCacheStore(root, true);
  }

  /**
   * Removes every entry and all shared state, keeping locks/ (a concurrent build holds its lock
   * files there) and the tag. Refuses a folder that is not a gpu-guest cache. Returns what it removed.
   */
  static clear(root: string): string[] {
    if (!existsSync(root)) return [];
    if (!isCacheFolder(root)) {
      throw new GuestError('E_CLEAN_REFUSED', `refusing to empty ${root}: it is not a gpu-guest cache (no CACHEDIR.TAG written by gpu-guest); check --cache-dir, or remove it yourself`);
    }
    const removed: string[] = [];
    for (const name of readdirSync(root).sort()) {
      if (name === 'locks' || name === 'CACHEDIR.TAG') continue;
      const path = join(root, name);
      if (!nothingMountedUnder(path)) {
        throw new GuestError('E_MOUNT_LEAK', `refusing to delete ${path}: something is still mounted below it (run any gpu-guest build once to recover stale mounts, or umount them)`, { details: mountsUnder(path) });
      }
      rmSync(path, { recursive: true, force: true });
      removed.push(path);
    }
    return removed;
  }

  async get(key: string): Promise<CacheEntry | undefined> {
    const entry = await this.readEntry(key);
    // meta.json's mtime is the entry's last use: `cache prune` removes the least recently used first
    if (entry && !this.readOnly) await utimes(join(this.root, 'entries', key, 'meta.json'), new Date(), new Date()).catch(() => undefined);
    return entry;
  }

  async entriesOf(kind: string): Promise<CacheEntry[]> {
    const root = join(this.root, 'entries');
    if (!existsSync(root)) return [];
    const found: CacheEntry[] = [];
    for (const key of await readdir(root)) {
      const entry = await this.readEntry(key);
      if (entry?.meta.kind === kind && entry.meta.key === key) found.push(entry);
    }
    return found;
  }

  /** The entry of a key as its meta.json records it, or undefined when that is missing or unreadable (prune removes such a folder). */
  private async readEntry(key: string): Promise<CacheEntry | undefined> {
    const dir = join(this.root, 'entries', key);
    try {
      return { key, outDir: join(dir, 'out'), meta: JSON.parse(await readFile(join(dir, 'meta.json'), 'utf8')) as EntryMeta };
    } catch {
      return undefined;
    }
  }

  async lock(key: string, onWait: (holder: string) => void, signal?: AbortSignal): Promise<() => Promise<void>> {
    const file = join(this.root, 'locks', `${key}.lock`);
    let told = false;
    for (;;) {
      if (signal?.aborted) throw new GuestError('E_INTERRUPTED', 'interrupted while waiting for a cache lock');
      try {
        const handle = await open(file, constants.O_CREAT | constants.O_EXCL | constants.O_WRONLY);
        await handle.writeFile(JSON.stringify({ pid: process.pid, host: hostname() }));
        await handle.close();
        return async () => {
          await rm(file, { force: true });
        };
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        if (code !== 'EEXIST') {
          throw new GuestError('E_CACHE_LOCK', `cannot take the cache lock ${file} (${code ?? messageOf(err)}): check that the cache folder is writable and has space`, { cause: err });
        }
      }
      const holder = await readHolder(file);
      if (holder && !lockHolderAlive(holder)) {
        await rm(file, { force: true });
        continue;
      }
      if (!told) {
        onWait(holder ? `process ${holder.pid} on ${holder.host}` : 'another process');
        told = true;
      }
      await new Promise((r) => setTimeout(r, 200));
    }
  }

  async begin(key: string): Promise<Scratch> {
    const root = join(this.root, 'tmp', `${key.slice(0, 16)}.${process.pid}.${randomBytes(4).toString('hex')}`);
    const scratch = { key, root, outDir: join(root, 'entry', 'out'), workDir: join(root, 'work') };
    mkdirSync(scratch.outDir, { recursive: true });
    mkdirSync(scratch.workDir, { recursive: true });
    return scratch;
  }

  async commit(scratch: Scratch, meta: EntryMeta): Promise<CacheEntry> {
    const entryDir = join(scratch.root, 'entry');
    await writeFile(join(entryDir, 'meta.json'), `${JSON.stringify(meta, null, 2)}\n`);
    const target = join(this.root, 'entries', scratch.key);
    if (existsSync(target)) await rm(target, { recursive: true, force: true });
    await rename(entryDir, target);
    await this.discard(scratch);
    return { key: scratch.key, outDir: join(target, 'out'), meta };
  }

  async discard(scratch: Scratch): Promise<void> {
    // a chroot that leaked a mount (E_MOUNT_LEAK) leaves it for the stale-mount recovery: never rm through it
    if (nothingMountedUnder(scratch.root)) await rm(scratch.root, { recursive: true, force: true, maxRetries: 3 });
  }

  lastMaterial(pipeline: string, task: string): KeyMaterial | undefined {
    try {
      return JSON.parse(readFileSync(this.indexFile(pipeline, task), 'utf8')) as KeyMaterial;
    } catch {
      return undefined;
    }
  }

  rememberMaterial(pipeline: string, task: string, material: KeyMaterial): void {
    if (this.readOnly) return;
    const file = this.indexFile(pipeline, task);
    mkdirSync(join(this.root, 'index', pipeline), { recursive: true });
    const tmp = `${file}.${process.pid}.tmp`;
    writeFileSync(tmp, JSON.stringify(material));
    // rename keeps a concurrent reader from seeing half a file
    renameSync(tmp, file);
  }

  lastResolution(id: string): JsonObject | undefined {
    try {
      return JSON.parse(readFileSync(join(this.root, 'resolutions', `${id}.json`), 'utf8')) as JsonObject;
    } catch {
      return undefined;
    }
  }

  rememberResolution(id: string, params: JsonObject): void {
    if (this.readOnly) return;
    mkdirSync(join(this.root, 'resolutions'), { recursive: true });
    const file = join(this.root, 'resolutions', `${id}.json`);
    writeFileSync(`${file}.${process.pid}.tmp`, JSON.stringify(params));
    renameSync(`${file}.${process.pid}.tmp`, file);
  }

  private indexFile(pipeline: string, task: string): string {
    return join(this.root, 'index', pipeline, `${task}.json`);
  }

  /** Removes scratch folders of processes that no longer exist (killed outright). */
  private sweepScratch(): void {
    for (const name of readdirSync(join(this.root, 'tmp'))) {
      const pid = Number(name.split('.')[1]);
      const dir = join(this.root, 'tmp', name);
      if (!Number.isInteger(pid) || pid <= 0 || pid === process.pid || processAlive(pid)) continue;
      // Never delete through a mount (a chroot's /dev bind): leave it for the mount recovery. If
      // the mount table cannot be read, mountsUnder throws and nothing is deleted.
      if (nothingMountedUnder(dir)) void rm(dir, { recursive: true, force: true }).catch(() => undefined);
    }
  }
}

/** Whether the process that wrote a lock may still hold it: one on another host cannot be checked, so it counts as alive. */
export function lockHolderAlive(holder: { pid: number; host: string }): boolean {
  return holder.host !== hostname() || processAlive(holder.pid);
}

async function readHolder(file: string): Promise<{ pid: number; host: string } | undefined> {
  try {
    return JSON.parse(await readFile(file, 'utf8')) as { pid: number; host: string };
  } catch {
    // The holder may have created the file but not yet written it; an empty lock that stays empty
    // for a minute belongs to a process that died in between.
    const st = await stat(file).catch(() => undefined);
    if (st && st.size === 0 && Date.now() - st.mtimeMs > 60_000) await rm(file, { force: true });
    return undefined;
  }
}

const CACHEDIR_SIGNATURE = 'Signature: 8a477f597d28d172789f06886806bc55';

export function isCacheFolder(root: string): boolean {
  try {
    return readFileSync(join(root, 'CACHEDIR.TAG'), 'utf8').startsWith(CACHEDIR_SIGNATURE) && existsSync(join(root, 'entries'));
  } catch {
    return false;
  }
}

function assertUsableCache(root: string): void {
  const why = unusableFolderReason(root);
  if (why) throw new GuestError('E_CACHE_UNWRITABLE', `cache folder ${root} is not writable (${why}): pass --cache-dir DIR or fix its permissions`);
}

/** True only when the mount table was read and shows nothing at or below dir. */
export function nothingMountedUnder(dir: string): boolean {
  try {
    return mountsUnder(dir).length === 0;
  } catch {
    return false;
  }
}
