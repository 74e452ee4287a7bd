import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parse } from 'yaml';
import { GuestError } from '../../model/errors.js';

/** A distro recipe: rootfs/<distro>/recipe.yaml, plus files/ to place and cleanup.list. */
export interface Recipe {
  distro: string;
  /** Archive keyring on the host that signs the distro's mirror. */
  keyring: string;
  /** Installed in every guest of this distro. */
  basePackages: string[];
  /** The mirror's components holding the NVIDIA driver packages (driver.source: apt); none: a repository must be named. */
  driverComponents: string[];
  /** What the kernel headers' host programs (objtool) need at run time, undeclared by a bindeb-pkg headers deb. */
  headerPackages: string[];
  /** Paths (globs) removed from the finished guest, from cleanup.list. */
  cleanup: string[];
  /** rootfs/<distro>/files/, copied over the root filesystem, when present. */
  filesDir?: string;
}

export function readRecipe(dir: string): Recipe {
  const file = join(dir, 'recipe.yaml');
  if (!existsSync(file)) throw new GuestError('E_PIPELINE_INVALID', `no rootfs recipe at ${file} (rootfs.distro names a folder under rootfs/)`);
  const data = parse(readFileSync(file, 'utf8')) as Partial<Recipe>;
  const cleanupFile = join(dir, 'cleanup.list');
  const cleanup = existsSync(cleanupFile)
    ? readFileSync(cleanupFile, 'utf8')
        .split('\n')
        .map((l) => l.replace(/#.*$/, '').trim())
        .filter(Boolean)
    : [];
  if (cleanup.some((p) => !p.startsWith('/') || p.includes('..') || p === '/')) {
    throw new GuestError('E_PIPELINE_INVALID', `${cleanupFile}: every entry must be an absolute path below / without ..`);
  }
  return {
    distro: String(data.distro),
    keyring: String(data.keyring),
    basePackages: data.basePackages ?? [],
    driverComponents: data.driverComponents ?? [],
    headerPackages: data.headerPackages ?? [],
    cleanup,
    filesDir: existsSync(join(dir, 'files')) ? join(dir, 'files') : undefined,
  };
}
