import { copyFileSync, cpSync, existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { requireNetwork } from '../../sys/offline.js';
import { GuestError } from '../../model/errors.js';
import type { DriverResult, KernelBuildResult, KernelPackagesResult, RootfsResult } from '../../model/results.js';
import type { StepContext, StepDefinition } from '../../model/step.js';
import { installedPackages, withChroot, type ChrootSession } from '../../sys/chroot.js';
import { packRootfs } from '../../sys/rootfs-tar.js';
import { readRecipe, type Recipe } from '../rootfs/recipe.js';
import { lockedRootfs } from '../rootfs/rootfs.js';
import { lockAddedPackages, type LockedPackages } from '../../sys/apt-private.js';
import { checkAddedPackages, fetchPinnedDebs, pinnedDebFiles, stageLockedRepository } from '../../sys/local-repo.js';
import type { JsonObject } from '../../model/json.js';
import { applyPatches, checkBuiltModule, findModules, firstCompilerError, signModules, stripModules, type ModuleSigningParams } from './driver-tree.js';
import { STAGE, stageRootfs } from './installer.js';

type PackagesParams = {
  version: string;
  moduleType: 'open' | 'proprietary';
  /** name=version, exactly one of them a DKMS package (checked when the pipeline loads). */
  packages: string[];
  /** null: the rootfs mirror's components the distro recipe names for the driver. */
  repository: { url: string; suite: string; components: string[] } | null;
  /** kernel.moduleSigning: the modules signed after stripping, on the host (DKMS does not sign). */
  signing?: ModuleSigningParams;
  /**
   * Set by `gpu-guest lock`: exactly what apt adds to the locked rootfs for the driver (the pins,
   * DKMS, the compiler, their dependencies), each .deb by sha256, and the InRelease files they were
   * resolved from. The packages are then installed from a local repository of exactly those.
   */
  locked?: LockedPackages;
};
type PackagesInputs = { packages: KernelPackagesResult; rootfs: RootfsResult; build?: KernelBuildResult };

/** The pins among driver.packages that name a DKMS package (…-dkms[:arch]=version). */
export function dkmsPins(packages: string[]): string[] {
  return packages.filter((n) => /-dkms(:[a-z0-9-]+)?=/.test(n));
}

const LIST = 'etc/apt/sources.list.d/gpu-guest-driver.list';
const KEYRING = 'etc/apt/keyrings/gpu-guest-driver.gpg';
const DKMS_CONF = 'etc/dkms/framework.conf.d/gpu-guest.conf';

/** A DKMS module registered by the driver's package: its source folder is /usr/src/<name>-<version>. */
interface DkmsModule {
  name: string;
  version: string;
}

/**
 * driver-packages (driver.source: apt): NVIDIA's driver as distribution packages from a signed
 * repository, exact versions, DKMS building the modules for the guest kernel inside the chroot.
 * The DKMS package goes in before the headers, so its postinst only registers the source; patches
 * are applied to /usr/src/<module>-<version>; then the headers and an explicit `dkms install -k
 * <release>`. Afterwards the build-only packages (DKMS, compiler, headers: what this step brought
 * in and nothing still needs) are purged, the built modules kept, and the package's runtime parts
 * (modprobe configuration, firmware, user-mode driver) stay.
 */
export const driverPackages: StepDefinition<PackagesParams, PackagesInputs, DriverResult> = {
  kind: 'driver-packages',
  version: 1,
  resources: { cpu: 'all' },
  lock: (p, files, ctx, upstream) => lockDriverPackages(p, files, upstream.rootfs, ctx.signal),
  // every locked package names the repository it comes from
  downloads: (p) => (p.locked ? pinnedDebFiles(p.locked.packages) : []),
  run: (ctx) => installDriverPackages(ctx),
};

/**
 * What apt adds to the locked rootfs when the driver's pins (and the headers' host packages) are
 * installed, exactly: apt's own choice, simulated with the locked rootfs as its dpkg status and the
 * repositories the build's chroot has (the rootfs mirror's components and the driver's), each
 * version pinned by the .deb's sha256 from the signed indices.
 */
async function lockDriverPackages(p: PackagesParams, files: Record<string, string | string[]>, rootfs: JsonObject | undefined, signal: AbortSignal): Promise<PackagesParams> {
  const base = lockedRootfs(rootfs, 'driver.source: apt');
  const recipe = readRecipe(files.recipe as string);
  if (!p.repository && !recipe.driverComponents.length) throw new GuestError('E_PIPELINE_INVALID', `driver.source: apt: the ${recipe.distro} recipe names no mirror components for NVIDIA's packages: give driver.repository (url, suite, components, key)`);
  const components = [...new Set([...base.components, ...(p.repository ? [] : recipe.driverComponents)])];
  const sources = [{ mirror: base.mirror, suite: base.suite, components, keyring: recipe.keyring }, ...(p.repository ? [{ ...p.repository, mirror: p.repository.url, keyring: files.repositoryKey as string }] : [])];
  const locked = await lockAddedPackages(sources, base.packages, [...p.packages, ...recipe.headerPackages], signal, (said, err) => new GuestError('E_DRIVER_INSTALL', `apt cannot install driver.packages ${p.packages.join(' ')} into the locked rootfs: ${said} (check the versions with apt-cache policy against the repository)`, { cause: err, details: err.details }));
  return { ...p, locked };
}

async function installDriverPackages(ctx: StepContext<PackagesParams, PackagesInputs>): Promise<DriverResult> {
  const p = ctx.params;
  if (!p.locked) requireNetwork(ctx.network, `driver.source: apt (apt-get install ${p.packages.join(' ')} in the chroot)`, [p.repository?.url ?? ctx.upstream.rootfs.result.mirror], 'lock the pipeline (`gpu-guest lock`) and fetch its packages, build the driver once with the network into this cache, or use driver.source: run with a local driver.path');
  // the locked packages are checked before the rootfs is unpacked: a missing or wrong .deb fails in seconds
  const lockedDebs = p.locked ? await fetchPinnedDebs(ctx, ctx.upstream.rootfs.result.mirror, p.locked.packages) : undefined;
  const debs = ctx.upstream.packages;
  const release = debs.result.kernelRelease;
  const image = debs.result.packages.find((d) => d.package === `linux-image-${release}`);
  const headers = debs.result.packages.find((d) => d.package === `linux-headers-${release}`);
  if (!image || !headers) throw new GuestError('E_HEADERS_MISSING', `kernel-debs produced no linux-image-${release} and linux-headers-${release} packages: DKMS cannot build the driver (CONFIG_MODULES must be y)`);
  const dkmsPackage = dkmsPins(p.packages)[0]!;
  const recipe = readRecipe(ctx.files.recipe as string);

  const root = join(ctx.workDir, 'root');
  const stage = await stageRootfs(ctx, ctx.upstream.rootfs, root, { dir: debs.dir, wanted: [image, headers] });
  let unstage: (() => void) | undefined;
  if (lockedDebs) {
    // apt in the chroot sees only a repository of exactly the locked .debs (the guest's own sources stay as they are)
    unstage = await stageLockedRepository(root, STAGE, lockedDebs, ctx.log, ctx.signal);
    ctx.log.info(`apt installs the driver from a local repository of the ${lockedDebs.length} locked packages`);
  } else {
    writeFileSync(join(root, LIST), `${repositoryLine(ctx, recipe, root)}\n`);
  }
  // DKMS would sign with a key it makes up (/var/lib/dkms/mok.key); the modules are signed after stripping instead
  mkdirSync(join(root, 'etc/dkms/framework.conf.d'), { recursive: true });
  writeFileSync(join(root, DKMS_CONF), 'sign_file="/nonexistent/gpu-guest-signs-after-stripping"\n');
  // name resolution for apt inside the chroot, removed again below
  copyFileSync('/etc/resolv.conf', join(root, 'etc/resolv.conf'));
  const modulesDir = join(root, 'lib/modules', release);
  let loadNames: Record<string, string> = {};
  let purged: string[] = [];
  try {
    await withChroot(root, ctx, async (chroot) => {
      // the image first: its postinst hooks need no headers, and DKMS is not there yet
      await chroot.run('dpkg', ['-i', `/${STAGE}/${image.file}`]);
      // every package present now is the guest's own: only what this step brings in may be removed later
      const autoBefore = await chroot.run('apt-mark', ['showauto'], { capture: true });
      // installed ones only: a package left with its config files (rc) is no package apt can mark
      await chroot.run('sh', ['-c', 'dpkg-query -W -f=\'${db:Status-Abbrev} ${Package}\\n\' | awk \'$1 == "ii" { print $2 }\' | xargs apt-mark manual >/dev/null']);
      await chroot.run('apt-get', ['update'], { explain: aptErrors });
      const before = p.locked ? await installedPackages(chroot) : undefined;
      await aptInstall(chroot, p.packages);
      const modules = await registeredModules(chroot, dkmsPackage);
      for (const m of modules) await applyPatches(ctx, ctx.files.patches, join(root, 'usr/src', `${m.name}-${m.version}`), `${m.name}-${m.version} (${dkmsPackage})`);
      await installHeaders(chroot, `/${STAGE}/${headers.file}`, recipe.headerPackages);
      if (p.locked && before) checkAddedPackages('the driver', before, await installedPackages(chroot), p.locked.packages, { ignore: [image.package, headers.package] });
      for (const m of modules) await dkmsBuild(chroot, m, release);
      // kept across the purge: removing the DKMS package runs `dkms remove`, which deletes them
      const built = findModules(modulesDir);
      if (!built.length) throw new GuestError('E_DRIVER_INSTALL', `dkms install finished but no NVIDIA module is under /lib/modules/${release} (dkms status: ${modules.map((m) => `${m.name}/${m.version}`).join(', ')})`);
      cpSync(modulesDir, join(stage, 'modules'), { recursive: true, filter: (src) => !/\/(build|source)$/.test(src) });
      await keepRuntimeDependencies(chroot, dkmsPackage);
      purged = await purgeBuildPackages(chroot, [dkmsPackage.split('=')[0]!, 'dkms', headers.package]);
      cpSync(join(stage, 'modules'), modulesDir, { recursive: true });
      await chroot.run('depmod', ['-a', release]);
      // the guest's own auto-installed packages stay auto, as they were
      const autoAgain = autoBefore.split('\n').filter(Boolean);
      if (autoAgain.length) await chroot.run('apt-mark', ['auto', ...autoAgain]);
      loadNames = parseLoadNames(await chroot.run('modprobe', ['--showconfig'], { capture: true }));
      await chroot.run('apt-get', ['clean']);
    });
  } finally {
    for (const f of [LIST, KEYRING, DKMS_CONF, 'etc/resolv.conf']) rmSync(join(root, f), { force: true });
    unstage?.();
  }
  rmSync(stage, { recursive: true, force: true });

  const modules = findModules(modulesDir);
  const main = modules.find((m) => moduleName(m) === 'nvidia' || loadNames[moduleName(m)] === 'nvidia');
  if (!main) {
    // Debian links /etc/modprobe.d/nvidia.conf through its glx alternative, which it sets up only with libcuda1 or the X driver
    throw new GuestError('E_DRIVER_INSTALL', `${dkmsPackage} built ${modules.map(moduleName).join(', ')}, but modprobe cannot load any of them as nvidia: no nvidia.ko and no 'install nvidia' line in /etc/modprobe.d (Debian sets up /etc/modprobe.d/nvidia.conf only with libcuda1 or the X driver installed: add libcuda1=<version> to driver.packages)`);
  }
  await stripModules(ctx, modulesDir, modules);
  await signModules(ctx, p.signing, ctx.upstream.build, modulesDir, modules);
  await checkBuiltModule(ctx, join(modulesDir, main), { release, version: p.version, moduleType: p.moduleType, source: dkmsPackage });
  await packRootfs(ctx.log, root, join(ctx.outDir, 'rootfs.tar'), ctx.sourceDate, ctx.signal);
  ctx.log.info(`driver ${p.version} (${p.moduleType}) installed from ${p.packages.join(' ')} for ${release}: ${modules.join(', ')}; purged ${purged.join(' ')}`);
  const names = Object.fromEntries(modules.map(moduleName).filter((n) => loadNames[n]).map((n) => [n, loadNames[n]!]));
  return {
    driverVersion: p.version,
    label: dkmsPackage.replace('=', ' '),
    kernelRelease: release,
    moduleType: p.moduleType,
    modules,
    source: 'apt',
    packages: p.packages,
    purged,
    ...(Object.keys(names).length ? { loadNames: names } : {}),
    ...(p.signing ? { signer: p.signing.signer } : {}),
    tarball: 'rootfs.tar',
  };
}

/** The sources line: the named repository, or the recipe's driver components of the rootfs mirror; its keyring copied in. */
function repositoryLine(ctx: StepContext<PackagesParams, PackagesInputs>, recipe: Recipe, root: string): string {
  const p = ctx.params;
  const rootfs = ctx.upstream.rootfs.result;
  if (!p.repository && !recipe.driverComponents.length) {
    throw new GuestError('E_PIPELINE_INVALID', `driver.source: apt: the ${recipe.distro} recipe names no mirror components for NVIDIA's packages: give driver.repository (url, suite, components, key)`);
  }
  mkdirSync(join(root, 'etc/apt/keyrings'), { recursive: true });
  copyFileSync(p.repository ? (ctx.files.repositoryKey as string) : recipe.keyring, join(root, KEYRING));
  const [url, suite, components] = p.repository ? [p.repository.url, p.repository.suite, p.repository.components] : [rootfs.mirror, rootfs.suite, recipe.driverComponents];
  return `deb [signed-by=/${KEYRING}] ${url} ${suite} ${components.join(' ')}`.trimEnd();
}

/** apt's own `E:` lines say which package or version is missing. */
function aptErrors(tail: string[]): string[] {
  return tail.filter((l) => /^(E|W): /.test(l)).slice(-4);
}

async function aptInstall(chroot: ChrootSession, packages: string[]): Promise<void> {
  try {
    await chroot.run('apt-get', ['install', '-y', '--no-install-recommends', ...packages], { explain: aptErrors });
  } catch (err) {
    if (err instanceof GuestError && err.code === 'E_INTERRUPTED') throw err;
    const said = err instanceof GuestError ? err.details.find((l) => l.startsWith('E: ')) : undefined;
    throw new GuestError('E_DRIVER_INSTALL', `apt-get could not install driver.packages ${packages.join(' ')}${said ? `: ${said.slice(3)}` : ''} (check the versions with apt-cache policy against the repository)`, { cause: err, details: err instanceof GuestError ? err.details : [] });
  }
}

/**
 * The headers deb, and what its host programs need but it does not declare (objtool links libelf):
 * those are marked auto, so the purge after the build takes them along unless the guest had them.
 */
async function installHeaders(chroot: ChrootSession, deb: string, needs: string[]): Promise<void> {
  const missing: string[] = [];
  for (const name of needs) {
    const status = await chroot.run('dpkg-query', ['-W', '-f=${db:Status-Abbrev}', name], { capture: true, okStatus: [0, 1] });
    if (!status.startsWith('ii')) missing.push(name);
  }
  if (missing.length) {
    await chroot.run('apt-get', ['install', '-y', '--no-install-recommends', ...missing], { explain: aptErrors });
    await chroot.run('apt-mark', ['auto', ...missing]);
  }
  await chroot.run('dpkg', ['-i', deb]);
}

/** The modules the DKMS package registered (`dkms status`: name/version: added). */
async function registeredModules(chroot: ChrootSession, dkmsPackage: string): Promise<DkmsModule[]> {
  const status = await chroot.run('dkms', ['status'], { capture: true });
  const modules = [...status.matchAll(/^([^/\s,]+)\/([^,:\s]+)[,:]/gm)].map((m) => ({ name: m[1]!, version: m[2]! }));
  if (!modules.length) throw new GuestError('E_DRIVER_INSTALL', `${dkmsPackage} registered no module with DKMS (dkms status is empty): it is not a DKMS package`);
  return modules;
}

/** `dkms install` for the guest kernel; on failure the compiler's first error and the tail of DKMS's make.log. */
async function dkmsBuild(chroot: ChrootSession, m: DkmsModule, release: string): Promise<void> {
  try {
    await chroot.run('dkms', ['install', '-m', m.name, '-v', m.version, '-k', release]);
  } catch (err) {
    if (err instanceof GuestError && err.code === 'E_INTERRUPTED') throw err;
    const logFile = join(chroot.root, 'var/lib/dkms', m.name, m.version, 'build/make.log');
    const log = existsSync(logFile) ? readFileSync(logFile, 'utf8').trimEnd().split('\n') : [];
    // the compiler's error, else the first thing make or the loader said went wrong
    const at = log.findIndex((l) => /(^|\s)(fatal )?error: |error while loading shared libraries|\*\*\* /.test(l));
    const first = firstCompilerError(log) ?? (at >= 0 ? log[at]!.trim() : undefined);
    const shown = at >= 0 ? log.slice(at, at + 20) : log.slice(-20);
    const details = log.length ? [`--- /var/lib/dkms/${m.name}/${m.version}/build/make.log (${at >= 0 ? `from line ${at + 1}` : 'tail'}) ---`, ...shown] : ['(DKMS wrote no make.log: see the task log)'];
    throw new GuestError('E_DRIVER_INSTALL', `DKMS could not build ${m.name} ${m.version} for kernel ${release}${first ? `: ${first}` : ' (its make.log tail follows)'}`, { cause: err, details });
  }
}

/**
 * The DKMS package's own dependencies other than DKMS (the modprobe configuration that loads the
 * renamed modules, the GSP firmware) are what the built modules need at run time: marked manual,
 * so purging the DKMS package does not take them along.
 */
async function keepRuntimeDependencies(chroot: ChrootSession, dkmsPackage: string): Promise<void> {
  const name = dkmsPackage.split('=')[0]!;
  const depends = await chroot.run('dpkg-query', ['-W', '-f=${Depends}', name], { capture: true });
  const wanted = new Set(depends.split(/[,|]/).map((d) => d.trim().split(/[\s(]/)[0]!).filter((d) => d && d !== 'dkms'));
  const listed = await chroot.run('dpkg-query', ['-W', '-f=${db:Status-Abbrev}\\t${Package}\\t${Provides}\\n'], { capture: true });
  const keep = listed
    .split('\n')
    .map((l) => l.split('\t'))
    .filter(([status, pkg, provides]) => status?.startsWith('ii') && pkg && (wanted.has(pkg) || (provides ?? '').split(',').some((v) => wanted.has(v.trim().split(/[\s(]/)[0]!))))
    .map(([, pkg]) => pkg!);
  if (keep.length) await chroot.run('apt-mark', ['manual', ...keep]);
}

/** Purges the named packages and what only they needed; returns every package removed. */
async function purgeBuildPackages(chroot: ChrootSession, names: string[]): Promise<string[]> {
  // only Depends keep a package: apt's Suggests (dpkg-dev) and Recommends would keep the compiler
  const only = ['-o', 'APT::AutoRemove::SuggestsImportant=false', '-o', 'APT::AutoRemove::RecommendsImportant=false'];
  const plan = await chroot.run('apt-get', [...only, '-s', 'purge', '--auto-remove', ...names], { capture: true });
  const removed = [...plan.matchAll(/^Purg (\S+)/gm)].map((m) => m[1]!);
  await chroot.run('apt-get', [...only, 'purge', '-y', '--auto-remove', ...names]);
  return removed.sort();
}

/** `install nvidia modprobe -i nvidia-current …` lines: which module file a name loads. */
export function parseLoadNames(showconfig: string): Record<string, string> {
  const names: Record<string, string> = {};
  for (const m of showconfig.matchAll(/^install (\S+) (.*)$/gm)) {
    const files = [...m[2]!.matchAll(/modprobe\s+(?:-\S+\s+)*-i\s+(\S+)/g)].map((x) => x[1]!);
    const file = files.pop();
    // modprobe spells both with underscores or dashes alike: dashes, as the files are named
    const name = m[1]!.replace(/_/g, '-');
    if (file && file.replace(/_/g, '-') !== name) names[file.replace(/_/g, '-')] = name;
  }
  return names;
}

/** The module name a file carries (nvidia-current-uvm.ko → nvidia-current-uvm). */
function moduleName(path: string): string {
  return path.split('/').pop()!.replace(/\.ko(\.(xz|zst|gz))?$/, '');
}
