import { createHash, randomBytes } from 'node:crypto';
import { createReadStream, createWriteStream, existsSync, mkdirSync, readFileSync, renameSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { spawn } from 'node:child_process';
import { loadGot, requestCodeOf } from '../sys/http.js';
import { GuestError, messageOf } from '../model/errors.js';
import { redact } from '../model/redact.js';
import type { KeyMaterial } from '../model/task.js';
import type { JsonObject } from '../model/json.js';
import { proxyAgent } from '../sys/proxy.js';
import { NO_NETWORK } from '../sys/download.js';
import { sha256File } from '../sys/hash.js';
import type { CacheEntry, CacheStore, EntryMeta, LocalCacheStore, Scratch } from './cache.js';

export type RemoteCacheMode = 'read' | 'readwrite';

export interface RemoteCacheOptions {
  /** Base URL: objects live at <url>/ac/<key>.json and <url>/cas/<sha256>.tar. */
  url: string;
  mode: RemoteCacheMode;
  /** Sent as `Authorization: Bearer …`; never logged. */
  token?: string;
  /** One line for the user: a remote problem is a warning, never a failure. */
  warn(line: string): void;
  /** Connect and idle limits, so a slow server cannot hold a build up for long. */
  connectTimeoutMs?: number;
  idleTimeoutMs?: number;
}

/** What <url>/ac/<key>.json holds: the entry's archive by its content address. */
type ActionRecord = { key: string; sha256: string; size: number };

/**
 * The local cache with a shared remote behind it (plain HTTP GET/HEAD/PUT, so any WebDAV server,
 * a bazel-remote-style cache or presigned object-store URLs serve it). A key missing locally is
 * looked up remotely: `ac/<key>.json` names the entry's tar by sha256, `cas/<sha256>.tar` is
 * downloaded, checked against that digest and size, unpacked and checked to be that key's entry
 * before it joins the local cache. A corrupt or truncated object is a warning and a rebuild, never
 * used. With readwrite, every entry a task commits is uploaded in the background (the build does
 * not wait for it until the end, and an upload failure only warns). A server that cannot be reached
 * is said once, and the rest of the build runs locally.
 */
export class RemoteCacheStore implements CacheStore {
  private unreachable = false;
  private readonly uploads: Promise<void>[] = [];
  private uploaded = 0;

  constructor(
    private readonly local: LocalCacheStore,
    private readonly o: RemoteCacheOptions,
  ) {}

  get root(): string {
    return this.local.root;
  }

  async get(key: string): Promise<CacheEntry | undefined> {
    const entry = await this.local.get(key);
    if (entry || this.unreachable) return entry;
    try {
      return await this.download(key);
    } catch (err) {
      this.problem(`cannot use the remote cache's entry ${key.slice(0, 12)}`, err);
      return undefined;
    }
  }

  entriesOf(kind: string): Promise<CacheEntry[]> {
    return this.local.entriesOf(kind);
  }

  lock(key: string, onWait: (holder: string) => void, signal?: AbortSignal): Promise<() => Promise<void>> {
    return this.local.lock(key, onWait, signal);
  }

  begin(key: string): Promise<Scratch> {
    return this.local.begin(key);
  }

  async commit(scratch: Scratch, meta: EntryMeta): Promise<CacheEntry> {
    const entry = await this.local.commit(scratch, meta);
    if (this.o.mode === 'readwrite' && !this.unreachable) {
      this.uploads.push(this.upload(entry).then(() => void this.uploaded++, (err) => this.problem(`could not upload ${meta.task} (${entry.key.slice(0, 12)}) to the remote cache; the build goes on`, err)));
    }
    return entry;
  }

  discard(scratch: Scratch): Promise<void> {
    return this.local.discard(scratch);
  }

  lastMaterial(pipeline: string, task: string): KeyMaterial | undefined {
    return this.local.lastMaterial(pipeline, task);
  }

  rememberMaterial(pipeline: string, task: string, material: KeyMaterial): void {
    this.local.rememberMaterial(pipeline, task, material);
  }

  lastResolution(id: string): JsonObject | undefined {
    return this.local.lastResolution(id);
  }

  rememberResolution(id: string, params: JsonObject): void {
    this.local.rememberResolution(id, params);
  }

  /** Waits for the background uploads; returns how many went up. */
  async flush(): Promise<number> {
    await Promise.all(this.uploads);
    return this.uploaded;
  }

  private url(path: string): string {
    return `${this.o.url.replace(/\/+$/, '')}/${path}`;
  }

  private request(url: string) {
    return {
      headers: this.o.token ? { authorization: `Bearer ${this.o.token}` } : {},
      retry: { limit: 0 },
      timeout: { connect: this.o.connectTimeoutMs ?? 10_000, socket: this.o.idleTimeoutMs ?? 30_000 },
      throwHttpErrors: false,
      agent: proxyAgent(url),
    } as const;
  }

  private async download(key: string): Promise<CacheEntry | undefined> {
    const { default: got } = await loadGot();
    const acUrl = this.url(`ac/${key}.json`);
    const ac = await got(acUrl, this.request(acUrl));
    if (ac.statusCode === 404) return undefined;
    if (ac.statusCode !== 200) throw new Error(`HTTP ${ac.statusCode} for ac/${key}.json`);
    const record = parseRecord(ac.body, key);
    const tmp = join(this.local.root, 'tmp', `remote-${key.slice(0, 16)}.${process.pid}.${randomBytes(4).toString('hex')}`);
    mkdirSync(join(tmp, 'entry'), { recursive: true });
    try {
      const tar = join(tmp, 'entry.tar');
      const casUrl = this.url(`cas/${record.sha256}.tar`);
      const hash = createHash('sha256');
      let size = 0;
      const count = new Transform({
        transform(chunk: Buffer, _enc, done) {
          hash.update(chunk);
          size += chunk.length;
          done(null, chunk);
        },
      });
      const stream = got.stream(casUrl, { ...this.request(casUrl), throwHttpErrors: true });
      await pipeline(stream, count, createWriteStream(tar));
      const sha256 = hash.digest('hex');
      if (sha256 !== record.sha256 || size !== record.size) {
        this.o.warn(`warning: the remote cache's object for ${key.slice(0, 12)} is corrupt or truncated (${size} bytes, sha256 ${sha256.slice(0, 16)}…; expected ${record.size} bytes, ${record.sha256.slice(0, 16)}…): not used, the task runs here`);
        return undefined;
      }
      await untar(tar, join(tmp, 'entry'));
      const meta = JSON.parse(readFileSync(join(tmp, 'entry', 'meta.json'), 'utf8')) as EntryMeta;
      if (meta.key !== key || !existsSync(join(tmp, 'entry', 'out'))) {
        this.o.warn(`warning: the remote cache's object for ${key.slice(0, 12)} holds another entry (${String(meta.key).slice(0, 12)}): not used, the task runs here`);
        return undefined;
      }
      const target = join(this.local.root, 'entries', key);
      try {
        renameSync(join(tmp, 'entry'), target);
      } catch (err) {
        // another build on this cache fetched or built it meanwhile: theirs is the same entry
        if (!existsSync(join(target, 'meta.json'))) throw err;
      }
      return await this.local.get(key);
    } finally {
      rmSync(tmp, { recursive: true, force: true });
    }
  }

  private async upload(entry: CacheEntry): Promise<void> {
    const { default: got } = await loadGot();
    const dir = join(entry.outDir, '..');
    const tmp = join(this.local.root, 'tmp', `upload-${entry.key.slice(0, 16)}.${process.pid}.${randomBytes(4).toString('hex')}`);
    mkdirSync(tmp, { recursive: true });
    try {
      const tar = join(tmp, 'entry.tar');
      // the entry as it is (owners, modes, times: kbuild reads the times of a kernel tree), names sorted
      await runTar(['-cf', tar, '-C', dir, '--sort=name', '--numeric-owner', '--xattrs', 'meta.json', 'out', ...(existsSync(join(dir, 'log.txt')) ? ['log.txt'] : [])]);
      const sha256 = await sha256File(tar);
      const size = statSync(tar).size;
      const casUrl = this.url(`cas/${sha256}.tar`);
      const head = await got.head(casUrl, this.request(casUrl));
      if (head.statusCode !== 200) {
        const put = await got.put(casUrl, { ...this.request(casUrl), body: createReadStream(tar), headers: { ...this.request(casUrl).headers, 'content-length': String(size), 'content-type': 'application/x-tar' } });
        if (put.statusCode >= 300) throw new Error(`HTTP ${put.statusCode} for PUT cas/${sha256}.tar`);
      }
      const acUrl = this.url(`ac/${entry.key}.json`);
      const record: ActionRecord = { key: entry.key, sha256, size };
      const put = await got.put(acUrl, { ...this.request(acUrl), body: `${JSON.stringify(record)}\n`, headers: { ...this.request(acUrl).headers, 'content-type': 'application/json' } });
      if (put.statusCode >= 300) throw new Error(`HTTP ${put.statusCode} for PUT ac/${entry.key}.json`);
    } finally {
      rmSync(tmp, { recursive: true, force: true });
    }
  }

  /** A remote problem: a warning; a server that cannot be reached is said once and not asked again. */
  private problem(what: string, err: unknown): void {
    if (this.unreachable) return;
    const code = requestCodeOf(err);
    // no network, as downloads see it, or a server that stopped answering
    const cannotReach = code !== undefined && (NO_NETWORK.has(code) || code === 'ETIMEDOUT' || code === 'ECONNRESET');
    if (cannotReach) {
      this.unreachable = true;
      this.o.warn(`warning: the remote cache ${redact(this.o.url)} cannot be reached (${code}): this build uses the local cache only`);
      return;
    }
    this.o.warn(`warning: ${what}: ${messageOf(err).split('\n')[0]}`);
  }
}

function parseRecord(body: string, key: string): ActionRecord {
  let r: Partial<ActionRecord>;
  try {
    r = JSON.parse(body) as Partial<ActionRecord>;
  } catch {
    throw new Error(`ac/${key}.json is not JSON`);
  }
  if (r.key !== key || typeof r.sha256 !== 'string' || !/^[0-9a-f]{64}$/.test(r.sha256) || typeof r.size !== 'number') throw new Error(`ac/${key}.json is not a record of this key`);
  return r as ActionRecord;
}

function untar(tar: string, dir: string): Promise<void> {
  return runTar(['-xf', tar, '-C', dir, '--numeric-owner', '--xattrs', '--xattrs-include=*']);
}

function runTar(args: string[]): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn('tar', args, { stdio: ['ignore', 'ignore', 'pipe'] });
    let err = '';
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    child.on('error', (e) => reject(new GuestError('E_MISSING_TOOL', `cannot run tar: ${e.message}`)));
    child.on('close', (code) => (code === 0 ? resolve() : reject(new Error(`tar ${args[0]} exited with status ${code}: ${err.trim().split('\n')[0]}`))));
  });
}
