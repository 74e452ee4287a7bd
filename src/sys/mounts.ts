import { readFileSync } from 'node:fs';
import { resolve, sep } from 'node:path';
import { GuestError, messageOf } from '../model/errors.js';

/** Decodes the octal escapes (\040 for a space) that /proc/self/mountinfo uses in paths. */
function unescapeMountPath(p: string): string {
  return p.replace(/\\([0-7]{3})/g, (_, oct: string) => String.fromCharCode(parseInt(oct, 8)));
}

/**
 * Mount points at or below a folder, deepest first (the order to unmount them in). Fails closed:
 * when the mount table cannot be read it throws E_MOUNTINFO rather than answer "nothing mounted",
 * because callers delete the folder when nothing is mounted below it.
 */
export function mountsUnder(dir: string, mountinfo = '/proc/self/mountinfo'): string[] {
  const root = resolve(dir);
  let text: string;
  try {
    text = readFileSync(mountinfo, 'utf8');
  } catch (err) {
    throw new GuestError('E_MOUNTINFO', `cannot read ${mountinfo} to check what is mounted under ${root} (${(err as NodeJS.ErrnoException).code ?? messageOf(err)}): nothing was deleted; mount /proc and run again`, { cause: err });
  }
  const points = text
    .split('\n')
    .filter(Boolean)
    .map((line) => unescapeMountPath(line.split(' ')[4] ?? ''))
    .filter((p) => p === root || p.startsWith(root + sep));
  return [...new Set(points)].sort((a, b) => b.length - a.length);
}
