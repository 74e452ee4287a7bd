import { existsSync, lstatSync, readdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';

/**
 * Removes cleanup-list entries (absolute paths in the guest; `*` matches within one path part)
 * from an unpacked root filesystem, never following a link out of it.
 */
export function applyCleanupList(root: string, patterns: string[]): number {
  let removed = 0;
  for (const pattern of patterns) {
    for (const path of expand(root, pattern.split('/').filter(Boolean))) {
      rmSync(path, { recursive: true, force: true });
      removed++;
    }
  }
  return removed;
}

function expand(dir: string, parts: string[]): string[] {
  if (parts.length === 0) return [dir];
  const [head, ...rest] = parts;
  if (!existsSync(dir) || !lstatSync(dir).isDirectory()) return [];
  if (!head!.includes('*')) return expand(join(dir, head!), rest).filter((p) => existsSync(p) || isLink(p));
  const re = new RegExp(`^${head!.replace(/[.+^${}()|[\]\\?]/g, '\\$&').replace(/\*/g, '.*')}$`);
  return readdirSync(dir)
    .filter((name) => re.test(name))
    .flatMap((name) => expand(join(dir, name), rest));
}

function isLink(p: string): boolean {
  try {
    return lstatSync(p).isSymbolicLink();
  } catch {
    return false;
  }
}

/** Bytes used by a folder (apparent sizes), for before/after figures. */
export function treeSize(dir: string): number {
  let total = 0;
  const walk = (d: string) => {
    for (const e of readdirSync(d, { withFileTypes: true })) {
      const p = join(d, e.name);
      const st = lstatSync(p);
      if (e.isDirectory()) walk(p);
      else total += st.size;
    }
  };
  if (existsSync(dir)) walk(dir);
  return total;
}
