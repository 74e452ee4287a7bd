import { chmodSync, copyFileSync, mkdirSync, readdirSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import { requireNetwork } from '../../sys/offline.js';
import { GuestError } from '../../model/errors.js';
import type { DriverResult, ToolkitResult } from '../../model/results.js';
import { installedPackages, withChroot, type ChrootSession } from '../../sys/chroot.js';
import { lockAddedPackages, type LockedPackages, type PinnedPackage } from '../../sys/apt-private.js';
import { checkAddedPackages, fetchPinnedDebs, pinnedDebFiles, stageLockedRepository } from '../../sys/local-repo.js';
import type { JsonObject } from '../../model/json.js';
import { applyCleanupList, treeSize } from '../../sys/cleanup.js';
import { readDebFields } from '../../sys/deb.js';
import { packRootfs, unpackRootfs } from '../../sys/rootfs-tar.js';
import type { StepContext, StepDefinition, StepLog } from '../../model/step.js';
import { readRecipe } from '../rootfs/recipe.js';
import { lockedRootfs } from '../rootfs/rootfs.js';

/** The four packages of the NVIDIA container toolkit; all must have one version. */
export const TOOLKIT_PACKAGES = ['nvidia-container-toolkit', 'nvidia-container-toolkit-base', 'libnvidia-container1', 'libnvidia-container-tools'];

export const HOOK_PATH = 'usr/share/oci/hooks/prestart/nvidia-container-toolkit.sh';
/** `cdi` mode: the unit that generates the CDI spec at boot, before the kata-agent starts. */
export const CDI_UNIT_PATH = 'etc/systemd/system/nvidia-cdi-generate.service';
const STAGE = 'var/tmp/gpu-guest-toolkit';

type ToolkitParams = {
  version: string;
  mode: 'oci-hook' | 'cdi';
  repository: { url: string; suite: string; components: string[] } | null;
  purge: string[];
  /** rootfs.keepBuildPackages: keep the kernel headers too. */
  keepHeaders: boolean;
  /**
   * Set by `gpu-guest lock` for toolkit.repository: the four packages and what they need that the
   * locked base rootfs lacks, each .deb by sha256, with the InRelease files they were resolved from.
   */
  locked?: LockedPackages;
};

/**
 * toolkit: installs the NVIDIA container toolkit (local debs or an apt repository), writes the Kata
 * prestart hook (or a CDI generator), then purges build-only packages and caches.
 */
export const toolkit: StepDefinition<ToolkitParams, { driver: DriverResult }, ToolkitResult> = {
  kind: 'toolkit',
  version: 1,
  resources: { cpu: 1 },
  // the package set is checked before the kernel is built, not after
  preflight: async (p, files, ctx) => void (await chooseToolkitDebs(ctx.log, files, p)),
  lock: (p, files, ctx, upstream) => lockToolkit(p, files, upstream.base, ctx.signal),
  downloads: (p) => (p.locked ? pinnedDebFiles(p.locked.packages) : []),
  run: (ctx) => installToolkit(ctx),
};

/**
 * toolkit.repository: the four packages at toolkit.version and what apt adds for them to the
 * locked base rootfs (from the toolkit's repository and the rootfs mirror), each pinned by sha256.
 * Local toolkit.debs are their own pin: nothing to lock.
 */
async function lockToolkit(p: ToolkitParams, files: Record<string, string | string[]>, rootfs: JsonObject | undefined, signal: AbortSignal): Promise<ToolkitParams> {
  if (!p.repository || (files.debs as string[] | undefined)?.length) return p;
  const base = lockedRootfs(rootfs, 'toolkit.repository');
  const key = files.repositoryKey as string | undefined;
  if (!key) throw new GuestError('E_PIPELINE_INVALID', 'toolkit.repository.key must be a local keyring file');
  const recipe = readRecipe(files.recipe as string);
  const sources = [{ mirror: p.repository.url, suite: p.repository.suite, components: p.repository.components, keyring: key }, { mirror: base.mirror, suite: base.suite, components: base.components, keyring: recipe.keyring }];
  const locked = await lockAddedPackages(sources, base.packages, TOOLKIT_PACKAGES.map((n) => `${n}=${p.version}`), signal, (said, err) => new GuestError('E_TOOLKIT_INSTALL', `apt cannot install the toolkit ${p.version} from ${p.repository!.url}: ${said}`, { cause: err, details: err.details }));
  return { ...p, locked };
}

interface LocalDeb {
  file: string;
  package: string;
  version: string;
}

async function readDebs(log: StepLog, paths: string[]): Promise<LocalDeb[]> {
  const files = paths.flatMap((p) => (statSync(p).isDirectory() ? readdirSync(p).filter((f) => f.endsWith('.deb')).sort().map((f) => join(p, f)) : [p]));
  const debs: LocalDeb[] = [];
  for (const file of files) {
    const f = await readDebFields(log, file, ['Package', 'Version']);
    debs.push({ file, package: f.Package, version: f.Version });
  }
  return debs;
}

/** The local toolkit debs to install (none when a repository is named), checked as a set. */
async function chooseToolkitDebs(log: StepLog, files: StepContext['files'], p: ToolkitParams): Promise<LocalDeb[]> {
  const paths = (files.debs as string[] | undefined) ?? [];
  if (!paths.length && !p.repository) throw new GuestError('E_PIPELINE_INVALID', 'toolkit: give toolkit.debs (local .deb files or folders) or toolkit.repository');
  return paths.length ? checkToolkitSet(await readDebs(log, paths), p.version) : [];
}

/** All four packages present, all of the pipeline's version: checked before anything is installed. */
export function checkToolkitSet(debs: LocalDeb[], version: string): LocalDeb[] {
  const chosen = TOOLKIT_PACKAGES.map((name) => debs.find((d) => d.package === name));
  const missing = TOOLKIT_PACKAGES.filter((_, i) => !chosen[i]);
  if (missing.length) throw new GuestError('E_TOOLKIT_INCOMPLETE', `toolkit.debs lacks ${missing.join(', ')} (all four toolkit packages are needed)`);
  const found = chosen as LocalDeb[];
  if (found.some((d) => d.version !== version)) {
    throw new GuestError('E_TOOLKIT_VERSION', `the toolkit packages must all be version ${version} (toolkit.version)`, { details: found.map((d) => `${d.package} ${d.version}${d.version === version ? '' : '  <- differs'} (${basename(d.file)})`) });
  }
  return found;
}

async function installToolkit(ctx: StepContext<ToolkitParams, { driver: DriverResult }>): Promise<ToolkitResult> {
  const p = ctx.params;
  const debs = await chooseToolkitDebs(ctx.log, ctx.files, p);
  if (!debs.length && !p.locked) requireNetwork(ctx.network, `the toolkit from toolkit.repository`, [String(p.repository?.url)], 'lock the pipeline (`gpu-guest lock`) and fetch its packages, or set toolkit.debs to a folder of the toolkit .debs');
  const lockedDebs = p.locked && !debs.length ? await fetchPinnedDebs(ctx, String(p.repository?.url), p.locked.packages) : undefined;
  const recipe = readRecipe(ctx.files.recipe as string);
  const root = join(ctx.workDir, 'root');
  const driver = ctx.upstream.driver;
  await unpackRootfs(ctx.log, join(driver.dir, driver.result.tarball), root, ctx.signal);
  const release = driver.result.kernelRelease;
  const stage = join(root, STAGE);
  mkdirSync(stage, { recursive: true });
  for (const d of debs) copyFileSync(d.file, join(stage, basename(d.file)));
  const sizeBefore = treeSize(root);
  let purged: string[] = [];
  let installed: string[] = [];
  await withChroot(root, ctx, async (chroot) => {
    if (debs.length) await chroot.run('dpkg', ['-i', ...debs.map((d) => `/${STAGE}/${basename(d.file)}`)]);
    else if (lockedDebs) await installLocked(chroot, root, p, lockedDebs, ctx);
    else await installFromRepository(chroot, root, p, ctx);
    // asked inside the chroot: the postinst's link is absolute
    const hook = await chroot.run('sh', ['-c', 'test -x /usr/bin/nvidia-container-toolkit && echo ok || echo missing'], { capture: true });
    if (hook.trim() !== 'ok') {
      throw new GuestError('E_TOOLKIT_INSTALL', 'nvidia-container-toolkit installed, but /usr/bin/nvidia-container-toolkit is missing (its postinst did not run)');
    }
    installed = (await chroot.run('dpkg-query', ['-W', '-f=${Package}=${Version}\\n', ...TOOLKIT_PACKAGES], { capture: true })).trim().split('\n').sort();
    purged = await purgeBuildPackages(chroot, [...p.purge, ...(p.keepHeaders ? [] : [`linux-headers-${release}`])]);
  });
  rmSync(stage, { recursive: true, force: true });
  writeHookOrCdi(root, p.mode);
  const removed = applyCleanupList(root, recipe.cleanup);
  const sizeAfter = treeSize(root);
  ctx.log.info(`rootfs ${(sizeBefore / 2 ** 20).toFixed(1)} MiB before cleanup, ${(sizeAfter / 2 ** 20).toFixed(1)} MiB after (${purged.length} packages purged, ${removed} paths removed)`);
  await packRootfs(ctx.log, root, join(ctx.outDir, 'rootfs.tar'), ctx.sourceDate, ctx.signal);
  return { toolkitVersion: p.version, mode: p.mode, packages: installed, source: debs.length ? 'debs' : String(p.repository?.url), purged, sizeBeforeBytes: sizeBefore, sizeAfterBytes: sizeAfter, kernelRelease: release, tarball: 'rootfs.tar' };
}

async function installFromRepository(chroot: ChrootSession, root: string, p: ToolkitParams, ctx: StepContext<ToolkitParams, { driver: DriverResult }>): Promise<void> {
  const repo = p.repository!;
  const key = ctx.files.repositoryKey as string | undefined;
  if (!key) throw new GuestError('E_PIPELINE_INVALID', 'toolkit.repository.key must be a local keyring file');
  mkdirSync(join(root, 'etc/apt/keyrings'), { recursive: true });
  copyFileSync(key, join(root, 'etc/apt/keyrings/nvidia-container-toolkit.gpg'));
  writeFileSync(join(root, 'etc/apt/sources.list.d/nvidia-container-toolkit.list'), `deb [signed-by=/etc/apt/keyrings/nvidia-container-toolkit.gpg] ${repo.url} ${repo.suite} ${repo.components.join(' ')}\n`);
  // name resolution for apt inside the chroot, removed again below
  copyFileSync('/etc/resolv.conf', join(root, 'etc/resolv.conf'));
  try {
    await chroot.run('apt-get', ['update']);
    await chroot.run('apt-get', ['install', '-y', '--no-install-recommends', ...TOOLKIT_PACKAGES.map((n) => `${n}=${p.version}`)]);
  } finally {
    rmSync(join(root, 'etc/resolv.conf'), { force: true });
  }
}

/** The locked packages from a local repository of exactly them; what apt adds must be among them. */
async function installLocked(chroot: ChrootSession, root: string, p: ToolkitParams, debs: { file: string; pkg: PinnedPackage }[], ctx: StepContext<ToolkitParams, { driver: DriverResult }>): Promise<void> {
  const unstage = await stageLockedRepository(root, STAGE, debs, ctx.log, ctx.signal);
  ctx.log.info(`apt installs the toolkit from a local repository of the ${debs.length} locked packages`);
  try {
    await chroot.run('apt-get', ['update']);
    const before = await installedPackages(chroot);
    await chroot.run('apt-get', ['install', '-y', '--no-install-recommends', ...TOOLKIT_PACKAGES.map((n) => `${n}=${p.version}`)]);
    // locked against the base rootfs: the driver step may have brought some of them already
    checkAddedPackages('the toolkit', before, await installedPackages(chroot), p.locked!.packages, { subset: true });
  } finally {
    unstage();
  }
}

/** Purges the build-only packages that are installed; returns their names. */
async function purgeBuildPackages(chroot: ChrootSession, names: string[]): Promise<string[]> {
  if (!names.length) return [];
  const listed = await chroot.run('dpkg-query', ['-W', '-f=${Package} ${db:Status-Abbrev}\\n'], { capture: true });
  const installed = new Set(listed.split('\n').filter((l) => /\sii\s*$/.test(l)).map((l) => l.split(' ')[0]));
  const present = names.filter((n) => installed.has(n));
  if (present.length) await chroot.run('apt-get', ['purge', '-y', '--auto-remove', ...present]);
  await chroot.run('apt-get', ['clean']);
  return present;
}

/** The Kata prestart hook (`oci-hook`), or a boot-time CDI generator (`cdi`). */
function writeHookOrCdi(root: string, mode: ToolkitParams['mode']): void {
  if (mode === 'oci-hook') {
    const hook = join(root, HOOK_PATH);
    mkdirSync(join(hook, '..'), { recursive: true });
    writeFileSync(hook, '#!/bin/bash -x\n/usr/bin/nvidia-container-toolkit -debug "$@"\n');
    chmodSync(hook, 0o755);
    return;
  }
  const unit = join(root, CDI_UNIT_PATH);
  mkdirSync(join(unit, '..'), { recursive: true });
  writeFileSync(unit, '[Unit]\nDescription=Generate the NVIDIA CDI specification\nBefore=kata-agent.service\n\n[Service]\nType=oneshot\nExecStart=/usr/bin/nvidia-ctk cdi generate --output=/var/run/cdi/nvidia.yaml\n\n[Install]\nWantedBy=multi-user.target\n');
  mkdirSync(join(root, 'etc/systemd/system/multi-user.target.wants'), { recursive: true });
  const link = join(root, 'etc/systemd/system/multi-user.target.wants/nvidia-cdi-generate.service');
  rmSync(link, { force: true });
  symlinkSync('/etc/systemd/system/nvidia-cdi-generate.service', link);
}
