import { copyFileSync, cpSync, existsSync, mkdirSync, readFileSync, renameSync, rmSync } from 'node:fs';
import { basename, join } from 'node:path';
import { availableParallelism } from 'node:os';
import { GuestError } from '../../model/errors.js';
import type { DriverModulesResult, DriverResult, KernelBuildResult, KernelPackagesResult, RootfsTarballResult } from '../../model/results.js';
import { withChroot } from '../../sys/chroot.js';
import { makeselfLabel } from '../../sys/makeself.js';
import { packRootfs, unpackRootfs } from '../../sys/rootfs-tar.js';
import type { StepContext, StepDefinition } from '../../model/step.js';
import { driverRunDownload, preflightDriverRun } from './driver-run.js';
import { applyPatches, extractCheckedRun, findModules, firstCompilerError, signModules, stripModules, type ModuleSigningParams } from './driver-tree.js';

type DriverParams = {
  version: string;
  sha256: string;
  url: string | null;
  /** Absent for `run` (keys of earlier builds stay valid). */
  source?: 'source';
  moduleType: 'open' | 'proprietary';
  installerArgs: string[];
  /** kernel.moduleSigning: NVIDIA's modules signed after stripping. */
  signing?: ModuleSigningParams;
};
type DriverInputs = { packages: KernelPackagesResult; rootfs: RootfsTarballResult; modules?: DriverModulesResult; build?: KernelBuildResult };

/** Staging folder inside the rootfs (not /tmp: the chroot session mounts a tmpfs there). */
const STAGE = 'var/tmp/gpu-guest';

/**
 * driver: installs the kernel image deb and NVIDIA's .run for the built kernel release. The .run
 * is extracted with the host's tools (a minbase rootfs may lack the stub's decompressor) and
 * nvidia-installer runs inside a chroot of the rootfs from the extracted folder, as NVIDIA's
 * installer requires (it reads ./.manifest). With driver.source `run` it builds the modules there
 * (headers deb installed, patches applied first); with `source` the modules come built from the
 * driver-modules task and the installer adds only firmware and userspace (--no-kernel-modules).
 * Neither the .run nor the extracted tree stays in the image.
 */
export const driver: StepDefinition<DriverParams, DriverInputs, DriverResult> = {
  kind: 'driver',
  version: 4,
  resources: { cpu: 'all' },
  preflight: (p, _files, ctx) => preflightDriverRun(ctx, { path: ctx.locations.run, url: p.url, version: p.version, sha256: p.sha256, what: 'driver', key: 'driver.version' }),
  downloads: (p, task) => driverRunDownload({ path: task.locations?.run, url: p.url, version: p.version, sha256: p.sha256, what: 'driver' }),
  run: (ctx) => installDriver(ctx),
};

async function installDriver(ctx: StepContext<DriverParams, DriverInputs>): Promise<DriverResult> {
  const p = ctx.params;
  const built = p.source === 'source' ? ctx.upstream.modules : undefined;
  if (p.source === 'source' && !built) throw new GuestError('E_STEP_FAILED', 'driver.source is source, but the task graph gave the driver task no driver-modules input');
  const debs = ctx.upstream.packages;
  const release = debs.result.kernelRelease;
  const packages = debs.result.packages;
  // modules built elsewhere need no headers (and no compiler) in the guest
  const wanted = packages.filter((d) => d.package === `linux-image-${release}` || (!built && d.package === `linux-headers-${release}`));
  if (!built && !wanted.some((d) => d.package.startsWith('linux-headers-'))) {
    throw new GuestError('E_HEADERS_MISSING', `kernel-debs produced no linux-headers-${release} package: the driver cannot be built (CONFIG_MODULES must be y)`);
  }
  // extracted, checked and patched before the rootfs is unpacked: a wrong file fails in seconds
  const extracted = join(ctx.workDir, 'driver');
  const run = await extractCheckedRun(ctx, { path: ctx.locations.run, url: p.url, version: p.version, sha256: p.sha256 }, extracted);
  const label = await makeselfLabel(ctx.log, run, ctx.signal);
  const version = p.version;
  if (built && (built.result.driverVersion !== version || built.result.kernelRelease !== release)) {
    // NVIDIA's user-mode and kernel-mode parts talk only when they are the same release
    throw new GuestError('E_VERSION_MISMATCH', `driver ${basename(run)} has the user-mode driver ${version}, but the kernel modules built from ${built.result.sourceFile} are ${built.result.driverVersion} for ${built.result.kernelRelease}: use the .run of the modules' release`);
  }
  if (!built) await applyPatches(ctx, ctx.files.patches, extracted, basename(run));

  const root = join(ctx.workDir, 'root');
  await unpackRootfs(ctx.log, join(ctx.upstream.rootfs.dir, ctx.upstream.rootfs.result.tarball), root, ctx.signal);
  const stage = join(root, STAGE);
  mkdirSync(stage, { recursive: true });
  renameSync(extracted, join(stage, 'driver'));
  for (const d of wanted) copyFileSync(join(debs.dir, d.file), join(stage, d.file));
  if (built) cpSync(join(built.dir, built.result.tree, 'lib/modules'), join(stage, 'modules'), { recursive: true });

  await withChroot(root, ctx, async (chroot) => {
    // the image package first, so the headers' scripts find the kernel they belong to
    await chroot.run('dpkg', ['-i', ...wanted.sort((a, b) => (a.package < b.package ? 1 : -1)).map((d) => `/${STAGE}/${d.file}`)]);
    const common = ['--silent', '--no-x-check', '--no-nouveau-check', '--no-systemd'];
    let args: string[];
    if (built) {
      // copied inside the chroot: /lib is a link to usr/lib in a merged-/usr rootfs
      await chroot.run('cp', ['-R', `/${STAGE}/modules/.`, '/lib/modules/']);
      await chroot.run('depmod', ['-a', release]);
      args = [...common, '--no-kernel-modules', ...p.installerArgs];
    } else {
      // checked inside the chroot: build is an absolute link, meaningless from the host
      const headers = await chroot.run('sh', ['-c', 'test -f "$1" && echo ok || echo missing', 'sh', `/lib/modules/${release}/build/Makefile`], { capture: true });
      if (headers.trim() !== 'ok') {
        throw new GuestError('E_HEADERS_MISSING', `/lib/modules/${release}/build is missing in the rootfs after installing linux-headers-${release}`);
      }
      args = ['-k', release, ...common, `--kernel-module-type=${p.moduleType}`, '-j', String(availableParallelism()), ...p.installerArgs];
    }
    try {
      await chroot.run('./nvidia-installer', args, { cwd: `/${STAGE}/driver` });
    } catch (err) {
      if (err instanceof GuestError && err.code === 'E_INTERRUPTED') throw err;
      const log = installerLog(root);
      const first = firstCompilerError(log);
      const why = first ? `: ${first}` : ' (its log: /var/log/nvidia-installer.log in the rootfs)';
      const what = built ? `install the user-mode driver ${version} and its firmware` : `build the ${p.moduleType} modules of driver ${version} for kernel ${release}`;
      throw new GuestError('E_DRIVER_INSTALL', `nvidia-installer failed to ${what}${why}`, { cause: err, details: installerLogTail(log) });
    }
  });
  const modules = findModules(join(root, 'lib/modules', release));
  if (!modules.some((m) => basename(m) === 'nvidia.ko')) throw new GuestError('E_DRIVER_INSTALL', `nvidia-installer finished but installed no nvidia.ko under /lib/modules/${release}`);
  rmSync(stage, { recursive: true, force: true });
  await stripModules(ctx, join(root, 'lib/modules', release), modules);
  await signModules(ctx, p.signing, ctx.upstream.build, join(root, 'lib/modules', release), modules);
  await packRootfs(ctx.log, root, join(ctx.outDir, 'rootfs.tar'), ctx.sourceDate, ctx.signal);
  ctx.log.info(`driver ${version} (${p.moduleType}${built ? `, modules built from ${built.result.sourceFile}` : ''}) installed for ${release}: ${modules.join(', ')}`);
  return { driverVersion: version, label, kernelRelease: release, moduleType: p.moduleType, modules, tarball: 'rootfs.tar', ...(built ? { source: 'source' as const } : {}), ...(p.signing ? { signer: p.signing.signer } : {}) };
}

function installerLog(root: string): string[] {
  const file = join(root, 'var/log/nvidia-installer.log');
  return existsSync(file) ? readFileSync(file, 'utf8').trimEnd().split('\n') : [];
}

function installerLogTail(log: string[]): string[] {
  if (log.length === 0) return ['(no /var/log/nvidia-installer.log was written)'];
  return ['--- tail of /var/log/nvidia-installer.log ---', ...log.slice(-20)];
}

