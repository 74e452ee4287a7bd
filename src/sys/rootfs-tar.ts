import { mkdirSync } from 'node:fs';
import { runLogged } from './exec.js';
import type { StepLog } from '../model/step.js';

/** Unpacks a root filesystem tarball as root, keeping owners, modes and device nodes. */
export async function unpackRootfs(log: StepLog, tarball: string, dir: string, signal?: AbortSignal): Promise<void> {
  mkdirSync(dir, { recursive: true });
  await runLogged(log, 'tar', ['-xpf', tarball, '-C', dir, '--numeric-owner', '--xattrs', '--xattrs-include=*'], { signal });
}

/**
 * Packs a root filesystem reproducibly: names sorted, mtimes clamped to the source date, numeric
 * owners, no atime/ctime — the same tree always gives the same bytes.
 */
export async function packRootfs(log: StepLog, dir: string, tarball: string, sourceDate: number, signal?: AbortSignal): Promise<void> {
  await runLogged(
    log,
    'tar',
    ['-cf', tarball, '-C', dir, '--sort=name', `--mtime=@${sourceDate}`, '--clamp-mtime', '--numeric-owner', '--xattrs', '--pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime', '.'],
    { signal, env: { ...process.env, LC_ALL: 'C' } },
  );
}

/**
 * Clamps every mtime in an unpacked tree to the source date (as tar --clamp-mtime does), after
 * edits such as the cleanup list touched folders: images made from the tree stay reproducible.
 */
export async function clampMtimes(log: StepLog, dir: string, sourceDate: number, signal?: AbortSignal): Promise<void> {
  await runLogged(log, 'sh', ['-c', 'find "$1" -newermt "@$2" -print0 | xargs -0 -r touch -h -d "@$2"', 'sh', dir, String(sourceDate)], { signal });
}

/** A gzip'd newc cpio of a tree (an initrd), reproducible: names sorted, no inode numbers, no gzip time. */
export async function packInitramfs(log: StepLog, dir: string, out: string, signal?: AbortSignal): Promise<void> {
  await runLogged(log, 'sh', ['-c', 'cd "$1" && find . -print0 | LC_ALL=C sort -z | cpio --null -o -H newc --reproducible --quiet | gzip -n -9 > "$2"', 'sh', dir, out], { signal });
}
