import { existsSync, readdirSync, rmSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { GuestError } from '../model/errors.js';
import { defaultCacheDir } from '../paths.js';
import { mountsUnder } from '../sys/mounts.js';
import type { CliEnv, PipelineOptions } from './context.js';

/** gpu-guest clean: the pipeline's out folder (or all of out/), and with --cache the cache too. */
export async function cleanCommand(opts: PipelineOptions & { cache?: boolean }, env: CliEnv): Promise<number> {
  const targets: string[] = [];
  if (opts.vendor || opts.pipeline) targets.push(env.loadGraph(opts).pipelineOut);
  else targets.push(resolve(opts.outDir));
  if (opts.cache) {
    const cache = resolve(opts.cacheDir ?? defaultCacheDir(env.env));
    // keep locks/: a concurrent build holds its lock files there
    for (const sub of ['entries', 'tmp', 'index', 'kbuild', 'downloads', 'digests.json']) targets.push(join(cache, sub));
  }
  for (const target of targets) {
    if (!existsSync(target)) continue;
    const mounted = mountsUnder(target);
    if (mounted.length) {
      throw new GuestError('E_MOUNT_LEAK', `refusing to delete ${target}: something is still mounted below it (run any gpu-guest build once to recover stale mounts, or umount them)`, { details: mounted });
    }
    rmSync(target, { recursive: true, force: true });
    env.stdout(`removed ${target}\n`);
  }
  if (opts.cache) {
    const locks = join(resolve(opts.cacheDir ?? defaultCacheDir(env.env)), 'locks');
    if (existsSync(locks) && readdirSync(locks).length) env.stdout(`kept ${locks}: a build may be running\n`);
  }
  return 0;
}
