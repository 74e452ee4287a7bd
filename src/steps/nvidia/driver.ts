import { cpSync, rmSync } from 'node:fs';
import { basename, join } from 'node:path';
import { GuestError } from '../../model/errors.js';
import type { DriverModulesResult, DriverResult, KernelBuildResult, KernelPackagesResult, RootfsTarballResult } from '../../model/results.js';
import { withChroot } from '../../sys/chroot.js';
import { makeselfLabel } from '../../sys/makeself.js';
import { packRootfs } from '../../sys/rootfs-tar.js';
import type { StepContext, StepDefinition } from '../../model/step.js';
import { driverRunInput } from './driver-run.js';
import { extractCheckedRun, findModules, signModules, stripModules, type ModuleSigningParams } from './driver-tree.js';
import { installKernelDebs, INSTALLER_ARGS, runInstaller, STAGE, stageRootfs } from './installer.js';

type DriverParams = {
  version: string;
  sha256: string;
  url: string | null;
  /** Absent for `run`: the modules came from installer-modules, and the kernel's headers go into the guest too. */
  source?: 'source';
  moduleType: 'open' | 'proprietary';
  installerArgs: string[];
  /** kernel.moduleSigning: NVIDIA's modules signed after stripping. */
  signing?: ModuleSigningParams;
};
type DriverInputs = { packages: KernelPackagesResult; rootfs: RootfsTarballResult; modules: DriverModulesResult; build?: KernelBuildResult };

/**
 * driver: installs the kernel image deb, NVIDIA's kernel modules as a module task built them
 * (installer-modules: nvidia-installer in the build root, driver.source run; driver-modules: on
 * the host, driver.source source) and, with nvidia-installer --no-kernel-modules, the .run's
 * firmware and user-mode driver. The .run is extracted with the host's tools (a minbase rootfs may
 * lack the stub's decompressor) and the installer runs inside a chroot of the rootfs from the
 * extracted folder, as NVIDIA's installer requires (it reads ./.manifest). The modules are never
 * built here: a change to the guest's packages reruns this task, not a module build. Neither the
 * .run nor the extracted tree stays in the image.
 */
export const driver: StepDefinition<DriverParams, DriverInputs, DriverResult> = {
  kind: 'driver',
  version: 5,
  resources: { cpu: 'all' },
  ...driverRunInput,
  run: (ctx) => installDriver(ctx),
};

async function installDriver(ctx: StepContext<DriverParams, DriverInputs>): Promise<DriverResult> {
  const p = ctx.params;
  const built = ctx.upstream.modules;
  if (!built) throw new GuestError('E_STEP_FAILED', 'the task graph gave the driver task no kernel modules input (installer-modules or driver-modules)');
  const debs = ctx.upstream.packages;
  const release = debs.result.kernelRelease;
  // the run way puts the headers into the guest as nvidia-installer there always did (the toolkit
  // task purges them unless rootfs.keepBuildPackages); modules built on the host need none
  const withHeaders = p.source !== 'source';
  const wanted = debs.result.packages.filter((d) => d.package === `linux-image-${release}` || (withHeaders && d.package === `linux-headers-${release}`));
  // extracted and checked before the rootfs is unpacked: a wrong file fails in seconds
  const extracted = join(ctx.workDir, 'driver');
  const run = await extractCheckedRun(ctx, { path: ctx.locations.run, url: p.url, version: p.version, sha256: p.sha256 }, extracted);
  const label = await makeselfLabel(ctx.log, run, ctx.signal);
  const version = p.version;
  if (built.result.driverVersion !== version || built.result.kernelRelease !== release) {
    // NVIDIA's user-mode and kernel-mode parts talk only when they are the same release
    throw new GuestError('E_VERSION_MISMATCH', `driver ${basename(run)} has the user-mode driver ${version}, but the kernel modules built from ${built.result.sourceFile} are ${built.result.driverVersion} for ${built.result.kernelRelease}: use the .run of the modules' release`);
  }

  const root = join(ctx.workDir, 'root');
  const stage = await stageRootfs(ctx, ctx.upstream.rootfs, root, { dir: debs.dir, wanted }, extracted);
  cpSync(join(built.dir, built.result.tree, 'lib/modules'), join(stage, 'modules'), { recursive: true });

  await withChroot(root, ctx, async (chroot) => {
    await installKernelDebs(chroot, wanted);
    // copied inside the chroot: /lib is a link to usr/lib in a merged-/usr rootfs
    await chroot.run('cp', ['-R', `/${STAGE}/modules/.`, '/lib/modules/']);
    await chroot.run('depmod', ['-a', release]);
    await runInstaller(chroot, root, [...INSTALLER_ARGS, '--no-kernel-modules', ...p.installerArgs], `install the user-mode driver ${version} and its firmware`);
  });
  const modules = findModules(join(root, 'lib/modules', release));
  if (!modules.some((m) => basename(m) === 'nvidia.ko')) throw new GuestError('E_DRIVER_INSTALL', `the driver task installed no nvidia.ko under /lib/modules/${release} (the modules task's tree holds none)`);
  rmSync(stage, { recursive: true, force: true });
  await stripModules(ctx, join(root, 'lib/modules', release), modules);
  await signModules(ctx, p.signing, ctx.upstream.build, join(root, 'lib/modules', release), modules);
  await packRootfs(ctx.log, root, join(ctx.outDir, 'rootfs.tar'), ctx.sourceDate, ctx.signal);
  const by = built.result.from === 'installer' ? 'nvidia-installer in the build root' : `the host from ${built.result.sourceFile}`;
  ctx.log.info(`driver ${version} (${p.moduleType}, modules built by ${by}) installed for ${release}: ${modules.join(', ')}`);
  return { driverVersion: version, label, kernelRelease: release, moduleType: p.moduleType, modules, tarball: 'rootfs.tar', ...(p.source === 'source' ? { source: 'source' as const } : {}), ...(p.signing ? { signer: p.signing.signer } : {}) };
}
