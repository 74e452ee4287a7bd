import { copyFileSync, linkSync } from 'node:fs';

/** A hard link where the file system allows (the cache's files are never modified), else a copy. */
export function linkOrCopy(from: string, to: string): void {
  try {
    linkSync(from, to);
  } catch {
    copyFileSync(from, to);
  }
}
