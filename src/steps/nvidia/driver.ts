import { copyFileSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { basename, join } from 'node:path';
import { GuestError } from '../../model/errors.js';
import type { DriverResult, KernelPackagesResult, RootfsTarballResult } from '../../model/results.js';
import { withChroot } from '../../sys/chroot.js';
import { assertMakeselfArchive, checkMakeselfArchive, makeselfLabel } from '../../sys/makeself.js';
import { packRootfs, unpackRootfs } from '../../sys/rootfs-tar.js';
import type { StepContext, StepDefinition } from '../../model/step.js';
import { obtainDriverRun, preflightDriverRun } from './driver-run.js';

type DriverParams = {
  version: string;
  sha256: string;
  url: string | null;
  moduleType: 'open' | 'proprietary';
  installerArgs: string[];
};
type DriverInputs = { packages: KernelPackagesResult; rootfs: RootfsTarballResult };

/** Staging folder inside the rootfs (not /tmp: the chroot session mounts a tmpfs there). */
const STAGE = 'var/tmp/gpu-guest';

/**
 * driver: installs the kernel headers/image debs, then NVIDIA's .run with nvidia-installer for the
 * built kernel release, inside a chroot of the rootfs.
 */
export const driver: StepDefinition<DriverParams, DriverInputs, DriverResult> = {
  kind: 'driver',
  version: 2,
  resources: { cpu: 'all' },
  preflight: (p, _files, ctx) => preflightDriverRun(ctx, { path: ctx.locations.run, url: p.url, version: p.version, sha256: p.sha256, what: 'driver', key: 'driver.version' }),
  run: (ctx) => installDriver(ctx),
};

async function installDriver(ctx: StepContext<DriverParams, DriverInputs>): Promise<DriverResult> {
  const p = ctx.params;
  const debs = ctx.upstream.packages;
  const release = debs.result.kernelRelease;
  const packages = debs.result.packages;
  const wanted = packages.filter((d) => d.package === `linux-headers-${release}` || d.package === `linux-image-${release}`);
  if (!wanted.some((d) => d.package.startsWith('linux-headers-'))) {
    throw new GuestError('E_HEADERS_MISSING', `kernel-debs produced no linux-headers-${release} package: the driver cannot be built (CONFIG_MODULES must be y)`);
  }
  const run = await obtainDriverRun(ctx, { path: ctx.locations.run, url: p.url, version: p.version, sha256: p.sha256, what: 'driver' });
  assertMakeselfArchive(run, 'driver');
  await checkMakeselfArchive(ctx.log, run, 'driver', ctx.signal);
  const label = await makeselfLabel(ctx.log, run, ctx.signal);
  const version = /(\d+\.\d+(?:\.\d+)?)/.exec(basename(run))?.[1] ?? /(\d+\.\d+(?:\.\d+)?)\s*$/.exec(label)?.[1] ?? p.version;

  const root = join(ctx.workDir, 'root');
  await unpackRootfs(ctx.log, join(ctx.upstream.rootfs.dir, ctx.upstream.rootfs.result.tarball), root, ctx.signal);
  const stage = join(root, STAGE);
  mkdirSync(stage, { recursive: true });
  for (const d of wanted) copyFileSync(join(debs.dir, d.file), join(stage, d.file));
  copyFileSync(run, join(stage, basename(run)));

  await withChroot(root, ctx, async (chroot) => {
    // the image package first, so the headers' scripts find the kernel they belong to
    await chroot.run('dpkg', ['-i', ...wanted.sort((a, b) => (a.package < b.package ? 1 : -1)).map((d) => `/${STAGE}/${d.file}`)]);
    // checked inside the chroot: build is an absolute link, meaningless from the host
    const headers = await chroot.run('sh', ['-c', 'test -f "$1" && echo ok || echo missing', 'sh', `/lib/modules/${release}/build/Makefile`], { capture: true });
    if (headers.trim() !== 'ok') {
      throw new GuestError('E_HEADERS_MISSING', `/lib/modules/${release}/build is missing in the rootfs after installing linux-headers-${release}`);
    }
    await chroot.run('sh', [`/${STAGE}/${basename(run)}`, '-x', '--target', `/${STAGE}/driver`]);
    const args = ['-k', release, '--silent', '--no-x-check', '--no-nouveau-check', '--no-systemd', `--kernel-module-type=${p.moduleType}`, ...p.installerArgs];
    try {
      await chroot.run(`/${STAGE}/driver/nvidia-installer`, args);
    } catch (err) {
      if (err instanceof GuestError && err.code === 'E_INTERRUPTED') throw err;
      throw new GuestError('E_DRIVER_INSTALL', `nvidia-installer failed for kernel ${release} (its log: /var/log/nvidia-installer.log in the rootfs)`, { cause: err, details: installerLogTail(root) });
    }
  });
  const modules = findModules(join(root, 'lib/modules', release));
  if (!modules.some((m) => basename(m) === 'nvidia.ko')) throw new GuestError('E_DRIVER_INSTALL', `nvidia-installer finished but installed no nvidia.ko under /lib/modules/${release}`);
  rmSync(stage, { recursive: true, force: true });
  await packRootfs(ctx.log, root, join(ctx.outDir, 'rootfs.tar'), ctx.sourceDate, ctx.signal);
  ctx.log.info(`driver ${version} installed for ${release}: ${modules.join(', ')}`);
  return { driverVersion: version, label, kernelRelease: release, moduleType: p.moduleType, modules, tarball: 'rootfs.tar' };
}

function installerLogTail(root: string): string[] {
  const file = join(root, 'var/log/nvidia-installer.log');
  if (!existsSync(file)) return ['(no /var/log/nvidia-installer.log was written)'];
  return ['--- tail of /var/log/nvidia-installer.log ---', ...readFileSync(file, 'utf8').trimEnd().split('\n').slice(-20)];
}

/** Kernel modules under a /lib/modules/<release> folder, relative to it. */
function findModules(dir: string, prefix = ''): string[] {
  if (!existsSync(join(dir, prefix))) return [];
  return readdirSync(join(dir, prefix), { withFileTypes: true }).flatMap((e) => {
    const rel = prefix ? `${prefix}/${e.name}` : e.name;
    if (e.isDirectory() && e.name !== 'build' && e.name !== 'source') return findModules(dir, rel);
    return e.isFile() && /^nvidia.*\.ko(\.(xz|zst|gz))?$/.test(e.name) ? [rel] : [];
  });
}
