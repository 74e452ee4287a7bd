import { copyFileSync, existsSync, mkdirSync, renameSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { GuestError } from '../model/errors.js';
import { checkSha256, downloadVerified, markUsed } from './download.js';

/**
 * A remote input as the cache keeps it, by sha256: `downloads/<sha256>-<name>` (kernel tarballs,
 * `.run` files, module sources, apt `.deb`s of a kernel source) or `debs/<sha256>_<name>` (the
 * locked rootfs's packages). `gpu-guest fetch` gathers them into a bundle; `build --bundle` puts
 * them back; a step finds them there before it reaches for the network.
 */
export interface StoreFile {
  /** Relative to the cache folder. */
  path: string;
  urls: string[];
  sha256: string;
  /** For messages: `kernel tarball linux-6.1.192.tar.xz`. */
  what: string;
}

export function downloadsPath(sha256: string, name: string): string {
  return `downloads/${sha256}-${name}`;
}

export interface FetchStoreOptions {
  network: boolean;
  signal?: AbortSignal;
  log?(line: string): void;
  /** How to do without the network, for E_OFFLINE. */
  offlineFix: string;
  /** Downloads at once. Default 4. */
  parallel?: number;
}

/**
 * Puts every file into the cache's store, each checked against its sha256: kept when already
 * there, else copied from a `file://` URL or downloaded. Without the network, what is missing is
 * one E_OFFLINE counting and naming it, before any download. Returns the absolute paths, in order.
 */
export async function fetchIntoStore(cacheDir: string, files: StoreFile[], opts: FetchStoreOptions): Promise<string[]> {
  const missing = files.filter((f) => !existsSync(join(cacheDir, f.path)) && !f.urls.every((u) => u.startsWith('file:')));
  if (missing.length && !opts.network) {
    const named = missing.slice(0, 3).map((m) => m.what).join(', ');
    throw new GuestError('E_OFFLINE', `--offline: ${missing.length} input(s) are not in this cache (${named}${missing.length > 3 ? ', …' : ''}); ${opts.offlineFix}`);
  }
  let next = 0;
  const one = async (f: StoreFile) => {
    // a signal of its own per file, following the caller's: got leaves a listener on the signal of
    // every request it made, and a hundred .debs would pile them onto one
    const own = new AbortController();
    const follow = () => own.abort();
    if (opts.signal?.aborted) own.abort();
    opts.signal?.addEventListener('abort', follow, { once: true });
    try {
      await fetchOne(f, own.signal);
    } finally {
      opts.signal?.removeEventListener('abort', follow);
    }
  };
  const fetchOne = async (f: StoreFile, signal: AbortSignal) => {
    const dest = join(cacheDir, f.path);
    mkdirSync(dirname(dest), { recursive: true });
    const local = f.urls.find((u) => u.startsWith('file:'));
    if (local && !existsSync(dest)) {
      const part = `${dest}.${process.pid}.part`;
      copyFileSync(fileURLToPath(local), part);
      renameSync(part, dest);
    }
    if (local) {
      await checkSha256(dest, f.sha256, f.what, local);
      markUsed(dest);
    }
    else await downloadVerified({ urls: f.urls, dest, sha256: f.sha256, what: f.what, signal, log: opts.log, network: opts.network, offlineFix: opts.offlineFix });
  };
  const worker = async () => {
    while (next < files.length) await one(files[next++]!);
  };
  await Promise.all(Array.from({ length: Math.min(opts.parallel ?? 4, files.length) }, worker));
  return files.map((f) => join(cacheDir, f.path));
}
