import { join } from 'node:path';
import { GuestError } from '../../model/errors.js';
import { checkPinnedFile, downloadVerified } from '../../sys/download.js';
import { redact } from '../../model/redact.js';
import type { StepContext } from '../../model/step.js';

/** NVIDIA's download layout for a driver version. */
export function defaultDriverUrl(version: string, suffix = ''): string {
  return `https://download.nvidia.com/XFree86/Linux-x86_64/${version}/NVIDIA-Linux-x86_64-${version}${suffix}.run`;
}

/**
 * The .run from a local path (checked against the pinned sha256, never deleted) or a URL
 * (downloaded into the cache's downloads/ and verified). An unverified driver is never used.
 */
export async function obtainDriverRun(ctx: StepContext, opts: { path?: string; url?: string | null; version: string; sha256: string; what: string; suffix?: string }): Promise<string> {
  if (!/^[0-9a-f]{64}$/.test(opts.sha256)) throw new GuestError('E_PIPELINE_INVALID', `${opts.what}: a sha256 is required (pin the .run's sha256); an unverified driver is refused`);
  if (opts.path) {
    await checkPinnedFile(opts.path, opts.sha256, opts.what, 'the pipeline pins');
    return opts.path;
  }
  const url = opts.url ?? defaultDriverUrl(opts.version, opts.suffix);
  const name = new URL(url).pathname.split('/').pop()!;
  const dest = join(ctx.cacheDir, 'downloads', `${opts.sha256}-${name}`);
  ctx.log.info(`driver from ${redact(url)}`);
  return downloadVerified({ urls: [url], dest, sha256: opts.sha256, what: `${opts.what} ${name}`, signal: ctx.signal, onProgress: (d, t) => ctx.progress('download', d, t), log: (l) => ctx.log.info(l) });
}
