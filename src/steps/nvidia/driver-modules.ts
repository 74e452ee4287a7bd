import { downloadsPath } from '../../sys/store.js';
import { driverRunDownload } from './driver-run.js';
import { existsSync, mkdirSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { basename, join } from 'node:path';
import { GuestError } from '../../model/errors.js';
import type { JsonObject } from '../../model/json.js';
import type { DriverModulesResult, KernelBuildResult, KernelSourceResult } from '../../model/results.js';
import type { StepContext, StepDefinition } from '../../model/step.js';
import { assertTarArchive } from '../../sys/archive.js';
import { checkPinnedFile, downloadVerified, stepDownloadOptions } from '../../sys/download.js';
import { runLogged } from '../../sys/exec.js';
import { ccache, jobs, kbuildEnv, kernelTreePaths, makeAtStablePath } from '../../sys/kbuild.js';
import { redact } from '../../model/redact.js';
import { preflightDriverRun } from './driver-run.js';
import { applyPatches, checkBuiltModule, extractCheckedRun, findModules, firstCompilerError } from './driver-tree.js';

type ModulesParams = {
  version: string;
  moduleType: 'open' | 'proprietary';
  /** The .run (its own kernel tree is built when no tarball is given). */
  run: { sha256: string; url: string | null };
  /** NVIDIA's kernel module source release, or a tarball of a module tree. */
  tarball: { urls: string[]; sha256: string } | null;
};
type ModulesInputs = { source: KernelSourceResult; build: KernelBuildResult };

/** Where a module task's modules go in its entry (this one's and installer-modules'): laid out as the rootfs (lib/modules/<release>/…). */
export const MODULE_TREE = 'modules';

/**
 * driver-modules (driver.source: source): NVIDIA's kernel modules built on the host against the
 * kernel-build task's own object tree, as Kata's guest builder does, then `modules_install`ed into
 * out/modules. No compiler and no headers reach the guest, and the task needs no rootfs, so it
 * runs while the rootfs is created. The source is NVIDIA's kernel module source release (which
 * compiles NVIDIA's whole core), a tarball of a module tree with NVIDIA's prebuilt cores, or, when
 * neither is given, the .run's own kernel-open/ or kernel/ tree.
 */
export const driverModules: StepDefinition<ModulesParams, ModulesInputs, DriverModulesResult> = {
  kind: 'driver-modules',
  version: 4,
  resources: { cpu: 'all' },
  // the pinned sha256s are the identity: where the bytes come from is not
  identity: ({ run, tarball, ...rest }) => ({ ...rest, run: tarball ? null : run.sha256, tarball: tarball?.sha256 ?? null }) as JsonObject,
  preflight: async (p, _files, ctx) => {
    if (!p.tarball) {
      await preflightDriverRun(ctx, { path: ctx.locations.run, url: p.run.url, version: p.version, sha256: p.run.sha256, what: 'driver', key: 'driver.version' });
      return;
    }
    const local = ctx.locations.tarball;
    if (!local) return;
    await checkPinnedFile(local, p.tarball.sha256, 'driver.moduleSource', 'driver.moduleSource.sha256 says', ctx.sha256);
    assertTarArchive(local, 'driver.moduleSource');
  },
  downloads: (p, task) => {
    if (!p.tarball) return driverRunDownload({ path: task.locations?.run, url: p.run.url, version: p.version, sha256: p.run.sha256, what: 'driver' });
    if (task.locations?.tarball || !p.tarball.urls.length) return [];
    const name = basename(new URL(p.tarball.urls[0]!).pathname);
    return [{ path: downloadsPath(p.tarball.sha256, name), urls: p.tarball.urls, sha256: p.tarball.sha256, what: `driver.moduleSource ${name}` }];
  },
  run: (ctx) => buildModules(ctx),
};

async function buildModules(ctx: StepContext<ModulesParams, ModulesInputs>): Promise<DriverModulesResult> {
  const p = ctx.params;
  const build = ctx.upstream.build;
  const release = build.result.kernelRelease;
  if (!build.result.modules) throw new GuestError('E_HEADERS_MISSING', `kernel ${release} was built without CONFIG_MODULES: NVIDIA's modules cannot be built for it`);
  const { dir: top, from, name } = await obtainModuleSource(ctx);
  await applyPatches(ctx, ctx.files.patches, top, name);
  const tree = moduleTree(top, from, p.moduleType, name);
  const version = treeVersion(from === 'release' ? join(top, 'kernel-open') : tree, name);
  if (version !== p.version) {
    throw new GuestError('E_VERSION_MISMATCH', `driver.moduleSource ${name} holds the kernel modules of driver ${version}, but driver.version says ${p.version}: make them the same`);
  }

  // the kernel tree read-only at its stable path: NVIDIA's conftest and kbuild read it, never write it
  const at = kernelTreePaths();
  const kernelVars = [`SYSSRC=${at.source}`, `SYSOUT=${at.objtree}`];
  const cc = await ccache(ctx.cacheDir, build.result.compiler);
  const env = kbuildEnv(ctx.sourceDate, cc.env);
  const trees = { folder: build.dir, source: join(ctx.upstream.source.dir, 'tree') };
  const makeIn = (dir: string, args: string[]) => makeAtStablePath(ctx.log, trees, ['-C', dir, ...kernelVars, ...args], { env, signal: ctx.signal, readOnly: true, quiet: true });
  const buildDir = from === 'release' ? top : tree;
  try {
    await makeIn(buildDir, [`-j${jobs()}`, ...cc.args, 'modules']);
  } catch (err) {
    if (err instanceof GuestError && err.code === 'E_INTERRUPTED') throw err;
    // the compiler's lines are in the log's tail; makeAtStablePath's failure already carries them as details
    const first = firstCompilerError(ctx.log.tail(400));
    throw new GuestError('E_DRIVER_INSTALL', `the ${p.moduleType} kernel modules of driver ${version} (${name}) did not build for kernel ${release}${first ? `: ${first}` : ' (see the driver-modules task log)'}`, { cause: err, details: err instanceof GuestError ? err.details : [] });
  }
  const installRoot = join(ctx.outDir, MODULE_TREE);
  mkdirSync(installRoot, { recursive: true });
  // depmod runs in the rootfs, where every module of the kernel is
  await makeIn(buildDir, [`INSTALL_MOD_PATH=${installRoot}`, 'DEPMOD=/bin/true', 'modules_install']);
  const modulesDir = join(installRoot, 'lib/modules', release);
  const modules = findModules(modulesDir);
  const nvidia = modules.find((m) => basename(m) === 'nvidia.ko');
  if (!nvidia) throw new GuestError('E_DRIVER_INSTALL', `building ${name} installed no nvidia.ko under lib/modules/${release}`);
  await checkBuiltModule(ctx, join(modulesDir, nvidia), { release, version, moduleType: p.moduleType, source: name });
  ctx.log.info(`driver ${version} (${p.moduleType}, ${from}) built for ${release}: ${modules.join(', ')}`);
  return { driverVersion: version, kernelRelease: release, moduleType: p.moduleType, from, sourceFile: name, tree: MODULE_TREE, modules };
}

/** The extracted source: the .run's tree, or the tarball fetched (mirrors, resume, sha256) or read locally. */
async function obtainModuleSource(ctx: StepContext<ModulesParams, ModulesInputs>): Promise<{ dir: string; from: DriverModulesResult['from']; name: string }> {
  const p = ctx.params;
  const dir = join(ctx.workDir, 'src');
  if (!p.tarball) {
    const run = await extractCheckedRun(ctx, { path: ctx.locations.run, url: p.run.url, version: p.version, sha256: p.run.sha256 }, dir);
    return { dir, from: 'run', name: basename(run) };
  }
  let file = ctx.locations.tarball;
  // the name the user knows (the download's cache file carries its sha256 in front)
  const name = file ? basename(file) : basename(new URL(p.tarball.urls[0]!).pathname);
  if (file) {
    await checkPinnedFile(file, p.tarball.sha256, 'driver.moduleSource', 'driver.moduleSource.sha256 says');
  } else {
    ctx.log.info(`kernel module source from ${p.tarball.urls.map((u) => redact(u)).join(', ')}`);
    file = await downloadVerified({ urls: p.tarball.urls, dest: join(ctx.cacheDir, downloadsPath(p.tarball.sha256, name)), sha256: p.tarball.sha256, what: `driver.moduleSource ${name}`, ...stepDownloadOptions(ctx), offlineFix: 'build once with the network into this cache, or set driver.moduleSource.path to a local file' });
  }
  assertTarArchive(file, 'driver.moduleSource');
  mkdirSync(dir);
  await runLogged(ctx.log, 'tar', ['-xf', file, '-C', dir, '--no-same-owner'], { signal: ctx.signal });
  // one top folder (NVIDIA-kernel-module-source-<version>/) is the source's root
  const entries = readdirSync(dir);
  const top = entries.length === 1 && statSync(join(dir, entries[0]!)).isDirectory() ? join(dir, entries[0]!) : dir;
  const release = existsSync(join(top, 'kernel-open/Kbuild')) && existsSync(join(top, 'src/nvidia'));
  return { dir: top, from: release ? 'release' : 'tree', name };
}

/**
 * The kbuild folder to build: a release builds its core and then kernel-open/; a .run or a tree
 * tarball holds kernel-open/ and kernel/ (or is one of them), each with NVIDIA's prebuilt cores.
 */
function moduleTree(top: string, from: DriverModulesResult['from'], moduleType: 'open' | 'proprietary', name: string): string {
  if (from === 'release') {
    if (moduleType !== 'open') throw new GuestError('E_DRIVER_SOURCE', `driver.moduleSource ${name} is NVIDIA's kernel module source release, which holds the open modules only: set driver.moduleType: open`);
    return join(top, 'kernel-open');
  }
  const sub = join(top, moduleType === 'open' ? 'kernel-open' : 'kernel');
  if (existsSync(join(sub, 'Kbuild'))) return sub;
  if (existsSync(join(top, 'Kbuild')) && existsSync(join(top, 'nvidia/nv-kernel.o_binary'))) return top;
  const what = from === 'run' ? `driver ${name} has no ${moduleType === 'open' ? 'kernel-open' : 'kernel'}/ tree` : `driver.moduleSource ${name} holds neither NVIDIA's source release nor a module tree (Kbuild with nvidia/nv-kernel.o_binary)`;
  throw new GuestError('E_DRIVER_SOURCE', `${what}: check the file and driver.moduleType`);
}

/** The driver version a module tree is built as (its Kbuild's NV_VERSION_STRING). */
function treeVersion(tree: string, name: string): string {
  const kbuild = join(tree, 'Kbuild');
  const m = existsSync(kbuild) ? /NV_VERSION_STRING=\\?"(\d+(?:\.\d+)+)\\?"/.exec(readFileSync(kbuild, 'utf8')) : null;
  if (!m) throw new GuestError('E_DRIVER_SOURCE', `${name}: ${basename(tree)}/Kbuild names no NV_VERSION_STRING: it is not an NVIDIA kernel module tree`);
  return m[1]!;
}
