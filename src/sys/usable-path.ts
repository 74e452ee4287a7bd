import { accessSync, constants, statfsSync, statSync } from 'node:fs';
import { dirname, resolve } from 'node:path';

// procfs, sysfs, devpts, cgroup, cgroup2, debugfs, securityfs: no place for a cache or an out folder
// (Node's recursive mkdir spins forever on procfs)
const PSEUDO_FS = new Set([0x9fa0, 0x62656572, 0x1cd1, 0x27e0eb, 0x63677270, 0x64626720, 0x73636673]);

/**
 * Why a folder gpu-guest wants to create or use cannot be used, without creating anything:
 * undefined when it can. Checks the folder, or else its nearest existing parent: a directory, on
 * a real file system, writable.
 */
export function unusableFolderReason(path: string): string | undefined {
  let at = resolve(path);
  for (;;) {
    let st;
    try {
      st = statSync(at);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code !== 'ENOENT') return code ?? 'cannot stat';
      if (dirname(at) === at) return 'ENOENT';
      at = dirname(at);
      continue;
    }
    if (!st.isDirectory()) return at === resolve(path) ? 'not a directory' : `ENOTDIR: ${at} is not a directory`;
    try {
      if (PSEUDO_FS.has(statfsSync(at).type)) return `${at} is on a kernel pseudo file system`;
      accessSync(at, constants.W_OK | constants.X_OK);
    } catch (err) {
      return (err as NodeJS.ErrnoException).code ?? 'not writable';
    }
    return undefined;
  }
}
