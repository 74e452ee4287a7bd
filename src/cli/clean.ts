import { existsSync, readdirSync, rmSync } from 'node:fs';
import { join, relative, resolve, sep } from 'node:path';
import { LocalCacheStore } from '../engine/cache.js';
import { GuestError } from '../model/errors.js';
import { defaultCacheDir } from '../paths.js';
import { mountsUnder } from '../sys/mounts.js';
import { isOutFolder } from './context.js';
import type { CliEnv, PipelineOptions } from './context.js';

/**
 * gpu-guest clean: the pipeline's out folder (or all of the out folder), and with --cache the
 * cache's entries. Only folders gpu-guest made (its marker, its cache tag) are ever removed.
 */
export async function cleanCommand(opts: PipelineOptions & { cache?: boolean }, env: CliEnv): Promise<number> {
  const out = opts.vendor || opts.pipeline ? env.loadGraph(opts).pipelineOut : resolve(opts.outDir);
  const cache = resolve(opts.cacheDir ?? defaultCacheDir(env.env));
  // check everything before removing anything
  if (existsSync(out)) refuseUnlessOurs(out);
  if (existsSync(out)) {
    const mounted = mountsUnder(out);
    if (mounted.length) throw new GuestError('E_MOUNT_LEAK', `refusing to delete ${out}: something is still mounted below it (run any gpu-guest build once to recover stale mounts, or umount them)`, { details: mounted });
    rmSync(out, { recursive: true, force: true });
    env.stdout(`removed ${out}\n`);
  }
  if (opts.cache) {
    for (const path of LocalCacheStore.clear(cache)) env.stdout(`removed ${path}\n`);
    const locks = join(cache, 'locks');
    if (existsSync(locks) && readdirSync(locks).length) env.stdout(`kept ${locks}: a build may be running\n`);
  }
  return 0;
}

/** An out folder is removed only when gpu-guest made it, and never when the user stands in it. */
function refuseUnlessOurs(target: string): void {
  const cwd = process.cwd();
  const rel = relative(target, cwd);
  if (rel === '' || (!rel.startsWith('..') && !rel.startsWith(sep))) {
    throw new GuestError('E_CLEAN_REFUSED', `refusing to remove ${target}: it holds the current folder (${cwd}); pass the out folder gpu-guest wrote with --out-dir`);
  }
  if (!isOutFolder(target)) {
    throw new GuestError('E_CLEAN_REFUSED', `refusing to remove ${target}: gpu-guest did not make it (no .gpu-guest-out marker); check --out-dir, or remove it yourself`);
  }
}
