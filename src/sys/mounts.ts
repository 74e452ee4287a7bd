import { readFileSync } from 'node:fs';
import { resolve, sep } from 'node:path';

/** Decodes the octal escapes (\040 for a space) that /proc/self/mountinfo uses in paths. */
function unescapeMountPath(p: string): string {
  return p.replace(/\\([0-7]{3})/g, (_, oct: string) => String.fromCharCode(parseInt(oct, 8)));
}

/** Mount points at or below a folder, deepest first (the order to unmount them in). */
export function mountsUnder(dir: string, mountinfo = '/proc/self/mountinfo'): string[] {
  const root = resolve(dir);
  let text: string;
  try {
    text = readFileSync(mountinfo, 'utf8');
  } catch {
    return [];
  }
  const points = text
    .split('\n')
    .filter(Boolean)
    .map((line) => unescapeMountPath(line.split(' ')[4] ?? ''))
    .filter((p) => p === root || p.startsWith(root + sep));
  return [...new Set(points)].sort((a, b) => b.length - a.length);
}
