import { copyFileSync, existsSync, mkdirSync, readFileSync, renameSync } from 'node:fs';
import { join } from 'node:path';
import { GuestError } from '../../model/errors.js';
import type { KernelPackagesResult, RootfsTarballResult } from '../../model/results.js';
import type { StepContext, UpstreamOutput } from '../../model/step.js';
import type { ChrootSession } from '../../sys/chroot.js';
import { unpackRootfs } from '../../sys/rootfs-tar.js';
import { firstCompilerError } from './driver-tree.js';

/*
 * What the two nvidia-installer tasks share: the build root's (installer-modules) and the guest's
 * (driver). NVIDIA's installer runs inside a chroot from the extracted .run's folder (it reads
 * ./.manifest there), after the kernel's debs are installed.
 */

/** Staging folder inside a rootfs (not /tmp: the chroot session mounts a tmpfs there). */
export const STAGE = 'var/tmp/gpu-guest';

/** What every nvidia-installer run of gpu-guest says: no questions, no X, no nouveau check, no systemd units. */
export const INSTALLER_ARGS = ['--silent', '--no-x-check', '--no-nouveau-check', '--no-systemd'];

type Deb = KernelPackagesResult['packages'][number];

/**
 * A rootfs unpacked into `root` with the kernel's debs in /<STAGE> and, when given, the extracted
 * driver folder moved to /<STAGE>/driver. Returns the staging folder on the host.
 */
export async function stageRootfs(ctx: StepContext, rootfs: UpstreamOutput<RootfsTarballResult>, root: string, debs: { dir: string; wanted: Deb[] }, extracted?: string): Promise<string> {
  await unpackRootfs(ctx.log, join(rootfs.dir, rootfs.result.tarball), root, ctx.signal);
  const stage = join(root, STAGE);
  mkdirSync(stage, { recursive: true });
  if (extracted) renameSync(extracted, join(stage, 'driver'));
  for (const d of debs.wanted) copyFileSync(join(debs.dir, d.file), join(stage, d.file));
  return stage;
}

/** dpkg -i the staged kernel debs: the image package first, so the headers' scripts find the kernel they belong to. */
export async function installKernelDebs(chroot: ChrootSession, wanted: Deb[]): Promise<void> {
  const ordered = [...wanted].sort((a, b) => (a.package < b.package ? 1 : -1));
  await chroot.run('dpkg', ['-i', ...ordered.map((d) => `/${STAGE}/${d.file}`)]);
}

/**
 * ./nvidia-installer with `args` from the staged driver folder; a failure names what it was doing
 * (`what`), the compiler's first error when there is one, and the tail of the installer's log.
 */
export async function runInstaller(chroot: ChrootSession, root: string, args: string[], what: string): Promise<void> {
  try {
    await chroot.run('./nvidia-installer', args, { cwd: `/${STAGE}/driver` });
  } catch (err) {
    if (err instanceof GuestError && err.code === 'E_INTERRUPTED') throw err;
    const log = installerLog(root);
    const first = firstCompilerError(log);
    const why = first ? `: ${first}` : ' (its log: /var/log/nvidia-installer.log in the rootfs)';
    throw new GuestError('E_DRIVER_INSTALL', `nvidia-installer failed to ${what}${why}`, { cause: err, details: installerLogTail(log) });
  }
}

function installerLog(root: string): string[] {
  const file = join(root, 'var/log/nvidia-installer.log');
  return existsSync(file) ? readFileSync(file, 'utf8').trimEnd().split('\n') : [];
}

function installerLogTail(log: string[]): string[] {
  if (log.length === 0) return ['(no /var/log/nvidia-installer.log was written)'];
  return ['--- tail of /var/log/nvidia-installer.log ---', ...log.slice(-20)];
}
