import { createWriteStream, existsSync, mkdirSync, renameSync, rmSync, statSync, utimesSync } from 'node:fs';
import { pipeline } from 'node:stream/promises';
import { basename, dirname } from 'node:path';
import { httpStatusOf, loadGot, requestCodeOf } from './http.js';
import { proxyAgent, proxyFor } from './proxy.js';
import { GuestError } from '../model/errors.js';
import { redact } from '../model/redact.js';
import { sha256File } from './hash.js';
import { requireNetwork } from './offline.js';
import type { StepContext } from '../model/step.js';

export interface DownloadOptions {
  /** Tried in order: a mirror that fails moves on to the next. */
  urls: string[];
  /** Final path; the partial download lives next to it as `<dest>.part` and resumes from there. */
  dest: string;
  /** Expected sha256; a mismatch deletes the file and throws E_CHECKSUM_MISMATCH. */
  sha256?: string;
  /** What the file is, for messages (`kernel tarball linux-6.1.55.tar.xz`). */
  what: string;
  signal?: AbortSignal;
  onProgress?(done: number, total?: number): void;
  log?(line: string): void;
  /** Attempts per URL; a dropped connection resumes where it stopped. Default 4. */
  attempts?: number;
  /** Default 30 s without a byte. */
  idleTimeoutMs?: number;
  /** False under --offline: a file not already at `dest` with its sha256 is E_OFFLINE, with no request. Default true. */
  network?: boolean;
  /** With network false: how to do without the download, for the E_OFFLINE message. */
  offlineFix?: string;
}

/** What a step's download takes from its context: interruption, progress, log lines, and --offline. */
export function stepDownloadOptions(ctx: Pick<StepContext, 'signal' | 'progress' | 'log' | 'network'>): Pick<DownloadOptions, 'signal' | 'onProgress' | 'log' | 'network'> {
  return { signal: ctx.signal, onProgress: (d, t) => ctx.progress('download', d, t), log: (l) => ctx.log.info(l), network: ctx.network };
}

/** Connection errors that mean the host cannot be reached at all. */
export const NO_NETWORK = new Set(['ECONNREFUSED', 'ENOTFOUND', 'EAI_AGAIN', 'ENETUNREACH', 'EHOSTUNREACH']);

/** Downloads with got: retries, resume of a partial file, mirror failover, progress, sha256; through HTTP(S)_PROXY unless NO_PROXY names the host. */
/** A stored input's mtime is its last use: `cache prune` removes the ones no build used for long. */
export function markUsed(file: string): void {
  const now = new Date();
  utimesSync(file, now, now);
}

export async function downloadVerified(opts: DownloadOptions): Promise<string> {
  mkdirSync(dirname(opts.dest), { recursive: true });
  if (existsSync(opts.dest) && opts.sha256) {
    if ((await sha256File(opts.dest)) === opts.sha256) {
      markUsed(opts.dest);
      return opts.dest;
    }
    rmSync(opts.dest, { force: true });
  }
  requireNetwork(opts.network ?? true, `the download of ${opts.what}`, opts.urls, opts.offlineFix ?? 'fetch it once with the network into this cache, or give a local file');
  const part = `${opts.dest}.part`;
  const failures: string[] = [];
  for (const url of opts.urls) {
    try {
      await fetchWithResume(url, part, opts);
      renameSync(part, opts.dest);
      if (opts.sha256) await checkSha256(opts.dest, opts.sha256, opts.what, url);
      return opts.dest;
    } catch (err) {
      if (opts.signal?.aborted) throw new GuestError('E_INTERRUPTED', `download of ${opts.what} interrupted`, { cause: err });
      if (err instanceof GuestError && err.code === 'E_CHECKSUM_MISMATCH') throw err;
      failures.push(`${redact(url)}${through(url)}: ${describeFailure(err)}`);
      opts.log?.(`download from ${redact(url)} failed: ${describeFailure(err)}`);
      // a partial file from another mirror must not be glued to this one's bytes
      rmSync(part, { force: true });
    }
  }
  const allOffline = failures.every((f) => [...NO_NETWORK].some((c) => f.includes(c)));
  const allMissing = failures.every((f) => f.includes('HTTP 404'));
  const code = allMissing ? 'E_NOT_FOUND' : 'E_DOWNLOAD';
  const hint = allOffline ? 'no mirror could be reached: check the network or proxy, or give a local file instead' : allMissing ? 'no mirror has it: check the version or the URL' : 'check the mirrors';
  throw new GuestError(code, `cannot download ${opts.what} (${hint})`, { details: failures });
}

async function fetchWithResume(url: string, part: string, opts: DownloadOptions): Promise<void> {
  const attempts = opts.attempts ?? 4;
  let lastError: unknown;
  for (let attempt = 1; attempt <= attempts; attempt++) {
    const have = existsSync(part) ? statSync(part).size : 0;
    try {
      const { default: got } = await loadGot();
      const stream = got.stream(url, {
        headers: have > 0 ? { range: `bytes=${have}-` } : {},
        retry: { limit: 0 },
        timeout: { connect: 10_000, socket: opts.idleTimeoutMs ?? 30_000 },
        signal: opts.signal,
        decompress: false,
        agent: proxyAgent(url),
      });
      const response = await new Promise<{ statusCode: number }>((resolve, reject) => {
        stream.once('response', resolve);
        stream.once('error', reject);
      });
      // append only to a 206 answer; a server that ignores the range sends the whole file again
      const append = have > 0 && response.statusCode === 206;
      if (have > 0) opts.log?.(append ? `resuming ${basename(opts.dest)} at byte ${have}` : `server ignored the range; restarting ${basename(opts.dest)}`);
      stream.on('downloadProgress', (p: { transferred: number; total?: number }) => {
        const base = append ? have : 0;
        opts.onProgress?.(base + p.transferred, p.total ? base + p.total : undefined);
      });
      await pipeline(stream, createWriteStream(part, { flags: append ? 'a' : 'w' }));
      return;
    } catch (err) {
      lastError = err;
      if (opts.signal?.aborted) throw err;
      // the partial file is already whole: nothing is left to send
      const status = httpStatusOf(err);
      if (status === 416 && have > 0) return;
      if (status !== undefined && status < 500 && status !== 408 && status !== 429) throw err;
      const code = requestCodeOf(err);
      if (code && NO_NETWORK.has(code) && attempt >= 2) throw err;
      await new Promise((r) => setTimeout(r, Math.min(200 * 2 ** attempt, 2000)));
    }
  }
  throw lastError;
}

export async function checkSha256(file: string, expected: string, what: string, source?: string): Promise<void> {
  const actual = await sha256File(file);
  if (actual !== expected) {
    rmSync(file, { force: true });
    throw new GuestError('E_CHECKSUM_MISMATCH', `${what}: sha256 is ${actual}, expected ${expected}${source ? ` (from ${redact(source)})` : ''}; the download was deleted (check the mirror, or the pinned sha256)`);
  }
}

/**
 * A user's own file pinned by sha256 (a local tarball or .run): compared, never deleted.
 * `pin` names where the expected digest comes from (`kernel.sha256 says`, `the pipeline pins`).
 */
export async function checkPinnedFile(file: string, expected: string, what: string, pin: string, hash: (path: string) => Promise<string> = sha256File): Promise<void> {
  const actual = await hash(file);
  if (actual !== expected) {
    throw new GuestError('E_CHECKSUM_MISMATCH', `${what} ${basename(file)}: sha256 is ${actual}, ${pin} ${expected} (check the file or the pin)`);
  }
}

/** ` (through proxy P)` when the environment sends this URL through a proxy: a failure may be the proxy's. */
function through(url: string): string {
  const proxy = proxyFor(url);
  return proxy ? ` (through proxy ${redact(proxy)})` : '';
}

function describeFailure(err: unknown): string {
  const status = httpStatusOf(err);
  if (status !== undefined) return `HTTP ${status}`;
  const code = requestCodeOf(err);
  if (code) return `${code}: ${(err as Error).message.split('\n')[0]}`;
  return err instanceof Error ? err.message : String(err);
}

/** Fetches a small text (a directory listing, sha256sums.asc) from the first mirror that answers. */
export async function fetchText(urls: string[], what: string, signal?: AbortSignal): Promise<{ text: string; url: string }> {
  const failures: string[] = [];
  for (const url of urls) {
    try {
      const { default: got } = await loadGot();
      const text = await got(url, { retry: { limit: 1 }, timeout: { request: 20_000 }, signal, agent: proxyAgent(url) }).text();
      return { text, url };
    } catch (err) {
      if (signal?.aborted) throw new GuestError('E_INTERRUPTED', `fetching ${what} interrupted`, { cause: err });
      failures.push(`${redact(url)}${through(url)}: ${describeFailure(err)}`);
    }
  }
  const offline = failures.every((f) => [...NO_NETWORK].some((c) => f.includes(c)));
  const missing = failures.every((f) => f.includes('HTTP 404'));
  const hint = offline ? 'no mirror could be reached: check the network, or use kernel.source.tarball with a local file' : missing ? 'no mirror has it' : 'check the mirrors';
  throw new GuestError(missing ? 'E_NOT_FOUND' : 'E_DOWNLOAD', `cannot fetch ${what} (${hint})`, { details: failures });
}
