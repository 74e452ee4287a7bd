import { readdirSync } from 'node:fs';
import { join } from 'node:path';

/** Relative paths of files and symlinks under a folder (not folders themselves), sorted. */
export function listEntries(root: string, prefix = ''): string[] {
  const out: string[] = [];
  let names;
  try {
    names = readdirSync(join(root, prefix), { withFileTypes: true });
  } catch {
    return out;
  }
  for (const entry of names.sort((a, b) => (a.name < b.name ? -1 : 1))) {
    const rel = prefix ? `${prefix}/${entry.name}` : entry.name;
    if (entry.isDirectory()) out.push(...listEntries(root, rel));
    else out.push(rel);
  }
  return out;
}
