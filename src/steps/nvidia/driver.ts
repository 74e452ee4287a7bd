import { copyFileSync, existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync } from 'node:fs';
import { basename, join } from 'node:path';
import { availableParallelism } from 'node:os';
import { GuestError } from '../../model/errors.js';
import type { DriverResult, KernelPackagesResult, RootfsTarballResult } from '../../model/results.js';
import { withChroot } from '../../sys/chroot.js';
import { assertMakeselfArchive, checkMakeselfArchive, makeselfLabel } from '../../sys/makeself.js';
import { packRootfs, unpackRootfs } from '../../sys/rootfs-tar.js';
import type { StepContext, StepDefinition } from '../../model/step.js';
import { obtainDriverRun, preflightDriverRun } from './driver-run.js';
import { runLogged } from '../../sys/exec.js';

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
 * driver: installs the kernel headers/image debs, then NVIDIA's .run for the built kernel
 * release. The .run is extracted with the host's tools (a minbase rootfs may lack the stub's
 * decompressor), patched, and nvidia-installer runs inside a chroot of the rootfs from the
 * extracted folder, as NVIDIA's installer requires (it reads ./.manifest). Neither the .run nor
 * the extracted tree stays in the image.
 */
export const driver: StepDefinition<DriverParams, DriverInputs, DriverResult> = {
  kind: 'driver',
  version: 3,
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

  // extracted, checked and patched before the rootfs is unpacked: a wrong file fails in seconds
  const extracted = join(ctx.workDir, 'driver');
  await extractDriverRun(ctx, run, extracted);
  const version = manifestVersion(extracted, basename(run));
  if (version !== p.version) {
    throw new GuestError('E_VERSION_MISMATCH', `driver ${basename(run)} holds driver ${version} (its .manifest), but driver.version says ${p.version}: make them the same`);
  }
  await applyPatches(ctx, ctx.files.patches, extracted, basename(run));

  const root = join(ctx.workDir, 'root');
  await unpackRootfs(ctx.log, join(ctx.upstream.rootfs.dir, ctx.upstream.rootfs.result.tarball), root, ctx.signal);
  const stage = join(root, STAGE);
  mkdirSync(stage, { recursive: true });
  renameSync(extracted, join(stage, 'driver'));
  for (const d of wanted) copyFileSync(join(debs.dir, d.file), join(stage, d.file));

  await withChroot(root, ctx, async (chroot) => {
    // the image package first, so the headers' scripts find the kernel they belong to
    await chroot.run('dpkg', ['-i', ...wanted.sort((a, b) => (a.package < b.package ? 1 : -1)).map((d) => `/${STAGE}/${d.file}`)]);
    // checked inside the chroot: build is an absolute link, meaningless from the host
    const headers = await chroot.run('sh', ['-c', 'test -f "$1" && echo ok || echo missing', 'sh', `/lib/modules/${release}/build/Makefile`], { capture: true });
    if (headers.trim() !== 'ok') {
      throw new GuestError('E_HEADERS_MISSING', `/lib/modules/${release}/build is missing in the rootfs after installing linux-headers-${release}`);
    }
    const args = ['-k', release, '--silent', '--no-x-check', '--no-nouveau-check', '--no-systemd', `--kernel-module-type=${p.moduleType}`, '-j', String(availableParallelism()), ...p.installerArgs];
    try {
      await chroot.run('./nvidia-installer', args, { cwd: `/${STAGE}/driver` });
    } catch (err) {
      if (err instanceof GuestError && err.code === 'E_INTERRUPTED') throw err;
      const log = installerLog(root);
      const first = firstCompilerError(log);
      const why = first ? `: ${first}` : ' (its log: /var/log/nvidia-installer.log in the rootfs)';
      throw new GuestError('E_DRIVER_INSTALL', `nvidia-installer failed to build the ${p.moduleType} modules of driver ${version} for kernel ${release}${why}`, { cause: err, details: installerLogTail(log) });
    }
  });
  const modules = findModules(join(root, 'lib/modules', release));
  if (!modules.some((m) => basename(m) === 'nvidia.ko')) throw new GuestError('E_DRIVER_INSTALL', `nvidia-installer finished but installed no nvidia.ko under /lib/modules/${release}`);
  rmSync(stage, { recursive: true, force: true });
  await packRootfs(ctx.log, root, join(ctx.outDir, 'rootfs.tar'), ctx.sourceDate, ctx.signal);
  ctx.log.info(`driver ${version} (${p.moduleType}) installed for ${release}: ${modules.join(', ')}`);
  return { driverVersion: version, label, kernelRelease: release, moduleType: p.moduleType, modules, tarball: 'rootfs.tar' };
}

/** `sh X.run -x --target DIR` on the host: the stub's decompressor is the host's. */
async function extractDriverRun(ctx: StepContext, run: string, target: string): Promise<void> {
  try {
    await runLogged(ctx.log, 'sh', [run, '-x', '--target', target], { signal: ctx.signal, quiet: true });
  } catch (err) {
    if (err instanceof GuestError && err.code === 'E_INTERRUPTED') throw err;
    throw new GuestError('E_ARCHIVE_CORRUPT', `driver ${basename(run)} could not be extracted on this host (sh ${basename(run)} -x failed): check the file and that the host has xz-utils`, { cause: err });
  }
}

/** Line 2 of NVIDIA's .manifest is the driver version; a package without one is not NVIDIA's. */
function manifestVersion(dir: string, name: string): string {
  const file = join(dir, '.manifest');
  if (!existsSync(file)) throw new GuestError('E_NOT_MAKESELF', `driver ${name} has no .manifest: it is not an NVIDIA driver package (nvidia-installer installs from the folder holding .manifest)`);
  const version = readFileSync(file, 'utf8').split('\n')[1]?.trim() ?? '';
  if (!/^\d+(\.\d+)+$/.test(version)) throw new GuestError('E_NOT_MAKESELF', `driver ${name}: its .manifest names no driver version on line 2`);
  return version;
}

/** What GNU patch says when a patch does not fit the tree. */
const PATCH_TROUBLE = /FAILED|can't find file|malformed|Reversed|No file to patch|Only garbage/i;

/** Each patch (-p1, in order) must apply whole: a dry run first, so a bad one changes nothing. */
async function applyPatches(ctx: StepContext, patches: string | string[] | undefined, dir: string, runName: string): Promise<void> {
  const list = patches === undefined ? [] : Array.isArray(patches) ? patches : [patches];
  for (const [i, file] of list.entries()) {
    const args = ['-p1', '--forward', '--batch', '--no-backup-if-mismatch', '-d', dir, '-i', file];
    try {
      await runLogged(ctx.log, 'patch', ['--dry-run', ...args], { signal: ctx.signal, explain: (tail) => tail.filter((l) => PATCH_TROUBLE.test(l)).slice(-5) });
    } catch (err) {
      if (err instanceof GuestError && err.code === 'E_INTERRUPTED') throw err;
      const said = err instanceof GuestError ? err.details[0] : undefined;
      throw new GuestError('E_DRIVER_PATCH', `driver.patches[${i}] ${basename(file)} does not apply to ${runName}${said ? `: ${said.trim()}` : ''}`, { cause: err, details: err instanceof GuestError ? err.details : [] });
    }
    await runLogged(ctx.log, 'patch', args, { signal: ctx.signal });
    ctx.log.info(`applied ${basename(file)} to ${runName}`);
  }
}

function installerLog(root: string): string[] {
  const file = join(root, 'var/log/nvidia-installer.log');
  return existsSync(file) ? readFileSync(file, 'utf8').trimEnd().split('\n') : [];
}

/** The compiler's first `error:` line (file:line: error: …), which says why a module did not build. */
function firstCompilerError(log: string[]): string | undefined {
  const line = log.find((l) => /(^|\s)(fatal )?error: /.test(l) && !/^ERROR: /.test(l));
  return line?.trim().replace(/^.*?(\S+:\d+(:\d+)?: (fatal )?error: )/, '$1');
}

function installerLogTail(log: string[]): string[] {
  if (log.length === 0) return ['(no /var/log/nvidia-installer.log was written)'];
  return ['--- tail of /var/log/nvidia-installer.log ---', ...log.slice(-20)];
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
