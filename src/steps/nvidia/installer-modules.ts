import { copyFileSync, mkdirSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { basename, dirname, join } from 'node:path';
import { GuestError } from '../../model/errors.js';
import type { JsonObject } from '../../model/json.js';
import type { DriverModulesResult, KernelPackagesResult, RootfsTarballResult } from '../../model/results.js';
import type { StepContext, StepDefinition } from '../../model/step.js';
import { withChroot } from '../../sys/chroot.js';
import { MODULE_TREE } from './driver-modules.js';
import { driverRunInput } from './driver-run.js';
import { applyPatches, checkBuiltModule, extractCheckedRun, findModules } from './driver-tree.js';
import { installKernelDebs, INSTALLER_ARGS, runInstaller, stageRootfs } from './installer.js';

type InstallerModulesParams = {
  version: string;
  sha256: string;
  url: string | null;
  moduleType: 'open' | 'proprietary';
  installerArgs: string[];
};
type InstallerModulesInputs = { packages: KernelPackagesResult; root: RootfsTarballResult };

/**
 * installer-modules (driver.source: run): nvidia-installer builds NVIDIA's kernel modules, as it
 * does on a real machine, inside a chroot of the build root (the guest's suite with only the
 * recipe's base packages and rootfs.extraPackages: the compiler, make) with the kernel's image and
 * headers debs installed, from the .run's extracted folder with driver.patches applied. The
 * modules it installed are the task's output; the driver task puts them into the guest. The key
 * is the kernel's debs, the .run, the patches, the module type, the installer's arguments and the
 * build root: a change to the guest's package list does not rebuild them.
 */
export const installerModules: StepDefinition<InstallerModulesParams, InstallerModulesInputs, DriverModulesResult> = {
  kind: 'installer-modules',
  version: 1,
  resources: { cpu: 'all' },
  ...driverRunInput,
  // the pinned sha256 is the .run's identity: where it comes from is not
  identity: ({ url: _url, ...rest }) => rest as JsonObject,
  run: (ctx) => buildWithInstaller(ctx),
};

async function buildWithInstaller(ctx: StepContext<InstallerModulesParams, InstallerModulesInputs>): Promise<DriverModulesResult> {
  const p = ctx.params;
  const debs = ctx.upstream.packages;
  const release = debs.result.kernelRelease;
  const wanted = debs.result.packages.filter((d) => d.package === `linux-image-${release}` || d.package === `linux-headers-${release}`);
  if (!wanted.some((d) => d.package.startsWith('linux-headers-'))) {
    throw new GuestError('E_HEADERS_MISSING', `kernel-debs produced no linux-headers-${release} package: the driver cannot be built (CONFIG_MODULES must be y)`);
  }
  // extracted, checked and patched before the build root is unpacked: a wrong file fails in seconds
  const extracted = join(ctx.workDir, 'driver');
  const run = await extractCheckedRun(ctx, { path: ctx.locations.run, url: p.url, version: p.version, sha256: p.sha256 }, extracted);
  await applyPatches(ctx, ctx.files.patches, extracted, basename(run));
  const root = join(ctx.workDir, 'root');
  await stageRootfs(ctx, ctx.upstream.root, root, { dir: debs.dir, wanted }, extracted);

  await withChroot(root, ctx, async (chroot) => {
    await installKernelDebs(chroot, wanted);
    // checked inside the chroot: build is an absolute link, meaningless from the host
    const headers = await chroot.run('sh', ['-c', 'test -f "$1" && echo ok || echo missing', 'sh', `/lib/modules/${release}/build/Makefile`], { capture: true });
    if (headers.trim() !== 'ok') {
      throw new GuestError('E_HEADERS_MISSING', `/lib/modules/${release}/build is missing in the build root after installing linux-headers-${release}`);
    }
    const args = ['-k', release, ...INSTALLER_ARGS, `--kernel-module-type=${p.moduleType}`, '-j', String(availableParallelism()), ...p.installerArgs];
    await runInstaller(chroot, root, args, `build the ${p.moduleType} modules of driver ${p.version} for kernel ${release}`);
  });
  const installed = join(root, 'lib/modules', release);
  const modules = findModules(installed);
  if (!modules.some((m) => basename(m) === 'nvidia.ko')) throw new GuestError('E_DRIVER_INSTALL', `nvidia-installer finished but installed no nvidia.ko under /lib/modules/${release}`);
  const tree = join(ctx.outDir, MODULE_TREE, 'lib/modules', release);
  for (const m of modules) {
    mkdirSync(dirname(join(tree, m)), { recursive: true });
    copyFileSync(join(installed, m), join(tree, m));
  }
  await checkBuiltModule(ctx, join(tree, modules.find((m) => basename(m) === 'nvidia.ko')!), { release, version: p.version, moduleType: p.moduleType, source: basename(run) });
  ctx.log.info(`driver ${p.version} (${p.moduleType}) built by nvidia-installer in the build root for ${release}: ${modules.join(', ')}`);
  return { driverVersion: p.version, kernelRelease: release, moduleType: p.moduleType, from: 'installer', sourceFile: basename(run), tree: MODULE_TREE, modules };
}
