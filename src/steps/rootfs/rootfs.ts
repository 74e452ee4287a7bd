import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { findOnPath } from '../../sys/which.js';
import { GuestError } from '../../model/errors.js';
import { redact } from '../../model/redact.js';
import { instLines, PrivateApt, type PinnedPackage } from '../../sys/apt-private.js';
import { fetchPinnedDebs, pinnedDebFiles, writeLocalRepository } from '../../sys/local-repo.js';
import type { RootfsResult } from '../../model/results.js';
import type { JsonObject } from '../../model/json.js';
import { hostMirror } from '../../sys/apt-sources.js';
import { requireNetwork } from '../../sys/offline.js';
import { runLogged } from '../../sys/exec.js';
import { requireHostTools } from '../../sys/host-tools.js';
import { packRootfs } from '../../sys/rootfs-tar.js';
import type { StepContext, StepDefinition } from '../../model/step.js';
import { readRecipe, type Recipe } from './recipe.js';

type RootfsParams = {
  distro: string;
  suite: string;
  mirror: string;
  components: string[];
  variant: string;
  packages: string[];
  extraPackages: string[];
  sourceDate: number;
  /**
   * Set by `gpu-guest lock` (and read from the lock by `build --lock`): the exact package set
   * mmdebstrap installs, each .deb by sha256, and the InRelease it was resolved from. The rootfs is
   * then made from a local repository holding exactly those .debs.
   */
  locked?: { release: { url: string; sha256: string }; packages: PinnedPackage[] };
};

/**
 * rootfs: a Debian or Ubuntu root filesystem from a mirror with mmdebstrap (debootstrap when
 * mmdebstrap is absent), as a reproducible tarball. Depends on no kernel task.
 */
export const rootfs: StepDefinition<RootfsParams, Record<string, never>, RootfsResult> = {
  kind: 'rootfs',
  version: 1,
  resources: { cpu: 1 },
  // `host` becomes the host's actual mirror URL, which is part of the key
  resolve: async (params) => ({ ...params, mirror: params.mirror === 'host' ? hostMirror(params.distro) : params.mirror }),
  lock: (params, files, ctx) => lockPackages(params, readRecipe(files.recipe as string), ctx.signal),
  downloads: (params) => (params.locked ? pinnedDebFiles(params.locked.packages, params.mirror) : []),
  run: (ctx) => (ctx.params.locked ? createLockedRootfs(ctx, ctx.params.locked) : createRootfs(ctx)),
};

/** The locked rootfs a later step installs into, from the locked parameters the lock hands it (`what` names the step for the error). */
export function lockedRootfs(params: JsonObject | undefined, what: string): { mirror: string; suite: string; components: string[]; packages: PinnedPackage[] } {
  const p = params as Partial<RootfsParams> | undefined;
  if (!p?.mirror || !p.suite || !p.components || !p.locked) throw new GuestError('E_STEP_FAILED', `locking ${what} needs the locked rootfs it installs into, and the lock gave it none`);
  return { mirror: p.mirror, suite: p.suite, components: p.components, packages: p.locked.packages };
}

/** What mmdebstrap installs: the recipe's base packages and the pipeline's, build-only ones included. */
function includedPackages(p: RootfsParams, recipe: Recipe): string[] {
  return [...new Set([...recipe.basePackages, ...p.packages, ...p.extraPackages])].sort();
}

/** mmdebstrap's options that choose the package set (the same for a build and for locking it). */
function selectionOptions(p: RootfsParams, recipe: Recipe): string[] {
  const packages = includedPackages(p, recipe);
  return [`--variant=${p.variant}`, ...(packages.length ? [`--include=${packages.join(',')}`] : []), '--aptopt=Acquire::Languages "none"'];
}

/**
 * The package set mmdebstrap would install now, exactly: its own selection (a simulated run with
 * the build's options), each version pinned by the .deb's sha256 from the suite's signed indices.
 */
async function lockPackages(p: RootfsParams, recipe: Recipe, signal: AbortSignal): Promise<RootfsParams> {
  if (!(await findOnPath('mmdebstrap'))) throw new GuestError('E_MISSING_TOOL', 'locking the rootfs needs mmdebstrap (apt-get install mmdebstrap)');
  const source = { mirror: p.mirror, suite: p.suite, components: p.components, keyring: recipe.keyring };
  const [selected, apt] = await Promise.all([simulatedSelection(p, recipe, signal), PrivateApt.update(source, signal)]);
  try {
    const packages = await apt.pin(selected, signal);
    return { ...p, locked: { release: apt.release(), packages: packages.sort((a, b) => a.name.localeCompare(b.name)) } };
  } finally {
    apt.dispose();
  }
}

async function simulatedSelection(p: RootfsParams, recipe: Recipe, signal: AbortSignal): Promise<{ name: string; version: string }[]> {
  const lines: string[] = [];
  const log = { write: (c: string | Buffer) => void lines.push(...c.toString().split('\n')), info: () => {}, tail: (n: number) => lines.filter(Boolean).slice(-n) };
  const args = ['--simulate', '--verbose', ...selectionOptions(p, recipe), `--components=${p.components.join(',')}`, `--keyring=${recipe.keyring}`, p.suite, '/dev/null', p.mirror];
  await runLogged(log, 'mmdebstrap', args, { signal, env: { ...process.env, LC_ALL: 'C' }, explain: (tail) => mirrorErrors(tail, p) });
  const chosen = instLines(lines.join('\n'));
  if (chosen.length === 0) throw new GuestError('E_STEP_FAILED', `mmdebstrap --simulate named no package for ${p.suite} from ${redact(p.mirror)}`, { details: lines.filter(Boolean).slice(-8) });
  return chosen;
}

async function createRootfs(ctx: StepContext<RootfsParams>): Promise<RootfsResult> {
  await requireHostTools('rootfs');
  const p = ctx.params;
  requireNetwork(ctx.network, `the ${p.distro} ${p.suite} rootfs (mmdebstrap)`, [p.mirror], 'build the rootfs once with the network into this cache, or set rootfs.mirror to a file:// mirror');
  const recipe = readRecipe(ctx.files.recipe as string);
  const packages = includedPackages(p, recipe);
  const out = join(ctx.outDir, 'rootfs.tar');
  const env = { ...process.env, SOURCE_DATE_EPOCH: String(ctx.sourceDate), LC_ALL: 'C' };
  const explain = (tail: string[]) => mirrorErrors(tail, p);
  const builder = (await findOnPath('mmdebstrap')) ? 'mmdebstrap' : 'debootstrap';
  if (builder === 'mmdebstrap') {
    const hooks = guestHooks(recipe);
    await runLogged(
      ctx.log,
      'mmdebstrap',
      [
        ...selectionOptions(p, recipe),
        `--components=${p.components.join(',')}`,
        `--keyring=${recipe.keyring}`,
        ...hooks.map((h) => `--customize-hook=${h}`),
        p.suite,
        out,
        p.mirror,
      ],
      { env, signal: ctx.signal, explain },
    );
  } else {
    const dir = join(ctx.workDir, 'root');
    await runLogged(ctx.log, 'debootstrap', [`--variant=${p.variant === 'minbase' ? 'minbase' : 'buildd'}`, `--components=${p.components.join(',')}`, ...(packages.length ? [`--include=${packages.join(',')}`] : []), `--keyring=${recipe.keyring}`, p.suite, dir, p.mirror], { env, signal: ctx.signal, explain });
    await runLogged(ctx.log, 'rm', ['-f', join(dir, 'etc/hostname'), join(dir, 'etc/resolv.conf')]);
    if (recipe.filesDir) await runLogged(ctx.log, 'cp', ['-a', `${recipe.filesDir}/.`, dir]);
    await packRootfs(ctx.log, dir, out, ctx.sourceDate, ctx.signal);
  }
  return { distro: p.distro, suite: p.suite, mirror: p.mirror, packages, builder, tarball: 'rootfs.tar' };
}

/** mmdebstrap customize hooks every rootfs gets: no trace of the build host, the recipe's files. */
function guestHooks(recipe: Recipe): string[] {
  // the host's identity must not end up in a guest image
  return ['rm -f "$1/etc/hostname" "$1/etc/resolv.conf"', ...(recipe.filesDir ? [`sync-in ${recipe.filesDir} /`] : [])];
}

/**
 * A rootfs from the lock: every locked .deb fetched (or taken from the cache's .deb store) and
 * checked against its sha256, a local repository holding exactly those, mmdebstrap from it with the
 * build's own options, the guest's apt source set back to the real mirror, and the installed set
 * compared with the lock: a rootfs that is not exactly the locked one is never made.
 */
async function createLockedRootfs(ctx: StepContext<RootfsParams>, locked: NonNullable<RootfsParams['locked']>): Promise<RootfsResult> {
  const p = ctx.params;
  if (!(await findOnPath('mmdebstrap'))) throw new GuestError('E_MISSING_TOOL', 'a locked rootfs is made with mmdebstrap (apt-get install mmdebstrap)');
  const recipe = readRecipe(ctx.files.recipe as string);
  const packages = includedPackages(p, recipe);
  const debs = await fetchPinnedDebs(ctx, p.mirror, locked.packages);
  const repo = join(ctx.workDir, 'repo');
  const source = await writeLocalRepository(repo, p.suite, debs, ctx.log, ctx.signal);
  ctx.log.info(`local repository of the ${debs.length} locked packages: ${source}`);
  const installed = join(ctx.workDir, 'installed.txt');
  const mirrorLine = `deb ${p.mirror} ${p.suite} ${p.components.join(' ')}`;
  const hooks = [
    ...guestHooks(recipe),
    // the guest names the mirror the lock was made from, as an unlocked build's does, not this host's scratch folder
    `echo '${mirrorLine}' > "$1/etc/apt/sources.list"`,
    `chroot "$1" dpkg-query -W -f='\${Package} \${Version}\n' > '${installed}'`,
  ];
  const out = join(ctx.outDir, 'rootfs.tar');
  const env = { ...process.env, SOURCE_DATE_EPOCH: String(ctx.sourceDate), LC_ALL: 'C' };
  await runLogged(ctx.log, 'mmdebstrap', [...selectionOptions(p, recipe), ...hooks.map((h) => `--customize-hook=${h}`), p.suite, out, source], { env, signal: ctx.signal, explain: (tail) => mirrorErrors(tail, { ...p, mirror: source }) });
  compareInstalled(readFileSync(installed, 'utf8'), locked.packages);
  return { distro: p.distro, suite: p.suite, mirror: p.mirror, packages, builder: 'mmdebstrap', tarball: 'rootfs.tar' };
}

/** The installed set (dpkg-query's `name version` lines) must be the locked set, exactly. */
function compareInstalled(text: string, locked: PinnedPackage[]): void {
  const have = new Map(text.split('\n').filter(Boolean).map((l) => l.split(' ') as [string, string]));
  const want = new Map(locked.map((p) => [p.name, p.version]));
  const differences: string[] = [];
  for (const [name, version] of want) if (have.get(name) !== version) differences.push(have.has(name) ? `${name}: ${have.get(name)} installed, ${version} locked` : `${name} ${version}: locked, not installed`);
  for (const [name, version] of have) if (!want.has(name)) differences.push(`${name} ${version}: installed, not locked`);
  if (differences.length) {
    throw new GuestError('E_LOCK_MISMATCH', `the rootfs mmdebstrap made from the locked packages is not the locked set (${differences.length} difference(s)): run \`gpu-guest lock\` again`, { details: differences.slice(0, 20) });
  }
}

/** How apt says it never reached the mirror at all. */
const UNREACHABLE = /Could not connect|Connection refused|Temporary failure resolving|Could not resolve|No route to host|Network is unreachable|Connection timed out|Failed to connect/i;

/**
 * mmdebstrap and debootstrap report a missing suite and an unreachable mirror in several ways, and
 * an unreachable mirror also mentions the suite's Release file: say which it is, once, plainly.
 */
function mirrorErrors(tail: string[], p: RootfsParams): string[] {
  const lines = tail.filter((l) => /^(E:|W: Failed|Err:)|Failed getting release file|does not have a Release file|404\s+Not Found|Unable to locate package|unable to fetch|Couldn't find these debs/.test(l) || UNREACHABLE.test(l));
  const unreachable = lines.find((l) => UNREACHABLE.test(l));
  const noSuite = !unreachable && lines.some((l) => /Release|404/.test(l) && l.includes(p.suite));
  const head = unreachable
    ? [`the mirror ${p.mirror} could not be reached (${unreachable.replace(/^.*?((Could not|Temporary|No route|Network|Connection|Failed to connect).*)$/i, '$1').trim()}): check rootfs.mirror and the network`]
    : noSuite
      ? [`the mirror ${p.mirror} has no suite ${p.suite} (check rootfs.suite and rootfs.mirror)`]
      : [];
  return [...head, ...[...new Set(lines)].slice(-8)];
}
