import { join } from 'node:path';
import { GuestError } from '../../model/errors.js';
import { checkPinnedFile, downloadVerified, stepDownloadOptions } from '../../sys/download.js';
import { redact } from '../../model/redact.js';
import type { PreflightContext, StepContext, StepDefinition } from '../../model/step.js';
import { assertMakeselfArchive } from '../../sys/makeself.js';
import { basename } from 'node:path';
import { downloadsPath, type StoreFile } from '../../sys/store.js';

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
  const [file] = driverRunDownload(opts);
  ctx.log.info(`driver from ${redact(file!.urls[0]!)}`);
  return downloadVerified({ urls: file!.urls, dest: join(ctx.cacheDir, file!.path), sha256: opts.sha256, what: file!.what, ...stepDownloadOptions(ctx), offlineFix: 'build once with the network into this cache, or set the .run\'s path to a local file' });
}

/** Where the cache keeps a .run fetched from its URL (none for a local path): what `gpu-guest fetch` bundles. */
export function driverRunDownload(opts: { path?: string; url?: string | null; version: string; sha256: string; what: string; suffix?: string }): StoreFile[] {
  if (opts.path) return [];
  const url = opts.url ?? defaultDriverUrl(opts.version, opts.suffix);
  const name = new URL(url).pathname.split('/').pop()!;
  return [{ path: downloadsPath(opts.sha256, name), urls: [url], sha256: opts.sha256, what: `${opts.what} ${name}` }];
}

/**
 * What can be known about a .run before any task runs: the pin is a sha256, a local file has that
 * sha256 and a makeself stub, and a version in its name is the pipeline's. A URL is checked when
 * it is downloaded.
 */
export async function preflightDriverRun(ctx: PreflightContext, o: { path?: string; url?: string | null; version: string; sha256: string; what: string; key: string }): Promise<void> {
  if (!/^[0-9a-f]{64}$/.test(o.sha256)) throw new GuestError('E_PIPELINE_INVALID', `${o.what}: a sha256 is required (pin the .run's sha256); an unverified driver is refused`);
  const name = o.path ? basename(o.path) : o.url ? basename(new URL(o.url).pathname) : undefined;
  const named = name ? /-(\d+\.\d+(?:\.\d+)?)(?:-[a-z-]+)?\.run$/.exec(name)?.[1] : undefined;
  if (named && named !== o.version) {
    throw new GuestError('E_PIPELINE_INVALID', `${o.what} ${name} is version ${named}, but ${o.key} says ${o.version} (make them the same)`);
  }
  if (!o.path) return;
  await checkPinnedFile(o.path, o.sha256, o.what, 'the pipeline pins', ctx.sha256);
  assertMakeselfArchive(o.path, o.what);
}

/** The pipeline's .run as a task reads it: its pin and URL in the params, its local path a location. */
type RunPin = { version: string; sha256: string; url: string | null };

/** preflight and downloads of a task that reads the pipeline's .run (the driver, and installer-modules). */
export const driverRunInput: Pick<StepDefinition<RunPin>, 'preflight' | 'downloads'> = {
  preflight: (p, _files, ctx) => preflightDriverRun(ctx, { path: ctx.locations.run, url: p.url, version: p.version, sha256: p.sha256, what: 'driver', key: 'driver.version' }),
  downloads: (p, task) => driverRunDownload({ path: task.locations?.run, url: p.url, version: p.version, sha256: p.sha256, what: 'driver' }),
};
