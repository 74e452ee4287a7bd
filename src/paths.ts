import { readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

/** The gpu-guest installation: the folder holding package.json, pipelines/ and kernel-configs/. */
export const projectRoot = resolve(dirname(fileURLToPath(import.meta.url)), '..');

/** This gpu-guest's version (package.json). */
export function gpuGuestVersion(): string {
  return (JSON.parse(readFileSync(join(projectRoot, 'package.json'), 'utf8')) as { version: string }).version;
}

/** `$XDG_CACHE_HOME/gpu-guest`, else `~/.cache/gpu-guest`. */
export function defaultCacheDir(env: NodeJS.ProcessEnv = process.env): string {
  const xdg = env.XDG_CACHE_HOME;
  if (xdg && xdg.trim() !== '') return join(xdg, 'gpu-guest');
  return join(homedir(), '.cache', 'gpu-guest');
}

/**
 * The shipped kernel base profiles (x86_64): `minimal` is the tinyconfig-based guest that boots;
 * `kata` is that base plus the folder of fragments, by concern, that the kata-agent and container
 * workloads need.
 */
export function kernelProfileFiles(profile: 'kata' | 'minimal'): { baseConfig: string; profileFragments: string[] } {
  const base = join(projectRoot, 'kernel-configs', 'base');
  return { baseConfig: join(base, 'minimal', 'x86_64.conf'), profileFragments: profile === 'kata' ? [join(base, 'kata', 'x86_64')] : [] };
}
