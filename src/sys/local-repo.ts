import { mkdirSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { linkOrCopy } from './link.js';
import { basename, join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { sha256Hex } from '../model/json.js';
import type { StepLog } from '../model/step.js';
import { runLogged } from './exec.js';
import type { PinnedPackage } from './apt-private.js';
import type { StepContext } from '../model/step.js';
import { existsSync } from 'node:fs';
import { GuestError } from '../model/errors.js';
import { redact } from '../model/redact.js';
import { fetchIntoStore, type StoreFile } from './store.js';

/**
 * A Debian-format repository on this host holding exactly the given .debs, one suite, component
 * `main`: `pool/`, `dists/<suite>/main/binary-<arch>/Packages(.gz)` made by dpkg-scanpackages (with
 * the original index's Priority and Section as overrides, which mmdebstrap's variants select by),
 * and a Release listing their sha256. Unsigned: every .deb was checked against the lock's sha256,
 * whose digests came from the mirror's signed InRelease, so apt is told to trust it; apt copies from it (`copy:`, which mmdebstrap needs: a `file:` path is not visible inside the chroot). Returns the
 * one-line apt source that names it.
 */
export async function writeLocalRepository(root: string, suite: string, debs: { file: string; pkg: PinnedPackage }[], log: StepLog, signal?: AbortSignal): Promise<string> {
  const pool = join(root, 'pool/main');
  mkdirSync(pool, { recursive: true });
  for (const { file, pkg } of debs) {
    const dest = join(pool, `${pkg.name}_${pkg.version.replace(/^\d+:/, '')}_${pkg.architecture}.deb`);
    linkOrCopy(file, dest); // the cache and the task's scratch folder share a file system
  }
  // one line per package name (a bundle's repository may hold two versions of one)
  const override = [...new Set(debs.map(({ pkg }) => `${pkg.name} ${pkg.priority ?? 'optional'} ${pkg.section ?? 'misc'}`))].join('\n');
  writeFileSync(join(root, 'override'), `${override}\n`);
  const packages = await runLogged(log, 'dpkg-scanpackages', ['--multiversion', 'pool/main', 'override'], { cwd: root, signal, quiet: true, capture: true });
  const arches = [...new Set(debs.map(({ pkg }) => pkg.architecture).filter((a) => a !== 'all'))];
  const archList = arches.length ? arches : ['amd64'];
  const entries: string[] = [];
  for (const arch of archList) {
    const rel = `main/binary-${arch}`;
    mkdirSync(join(root, 'dists', suite, rel), { recursive: true });
    for (const [name, bytes] of [['Packages', Buffer.from(packages)], ['Packages.gz', gzipSync(packages)]] as const) {
      writeFileSync(join(root, 'dists', suite, rel, name), bytes);
      entries.push(` ${sha256Hex(bytes)} ${bytes.length} ${rel}/${name}`);
    }
  }
  const release = [`Suite: ${suite}`, `Codename: ${suite}`, `Architectures: ${[...archList, 'all'].join(' ')}`, 'Components: main', 'SHA256:', ...entries, ''];
  writeFileSync(join(root, 'dists', suite, 'Release'), release.join('\n'));
  return `deb [trusted=yes] copy://${root} ${suite} main`;
}

/** The file name a pinned .deb is kept under in the cache's shared .deb store. */
export function debStoreName(pkg: PinnedPackage): string {
  return `${pkg.sha256}_${basename(pkg.filename)}`;
}

/** The locked .debs as the cache's store keeps them (`debs/<sha256>_<file>`), fetched from the mirror each came from (the given one unless the pin names its own). */
export function pinnedDebFiles(pinned: PinnedPackage[], mirror?: string): StoreFile[] {
  return pinned.map((pkg) => ({ path: `debs/${debStoreName(pkg)}`, urls: [`${(pkg.mirror ?? mirror ?? '').replace(/\/$/, '')}/${pkg.filename}`], sha256: pkg.sha256, what: `${pkg.name} ${pkg.version} (${pkg.filename})` }));
}

/** The locked .debs in the cache's store, fetched where missing, each checked against its sha256. */
export async function fetchPinnedDebs(ctx: Pick<StepContext, 'cacheDir' | 'log' | 'network' | 'signal'>, mirror: string, pinned: PinnedPackage[]): Promise<{ file: string; pkg: PinnedPackage }[]> {
  const files = pinnedDebFiles(pinned, mirror);
  const missing = files.filter((f) => !existsSync(join(ctx.cacheDir, f.path))).length;
  if (missing) ctx.log.info(`fetching ${missing} of ${files.length} locked .debs from ${[...new Set(pinned.map((p) => redact(p.mirror ?? mirror)))].join(', ')}`);
  const paths = await fetchIntoStore(ctx.cacheDir, files, { network: ctx.network, signal: ctx.signal, log: (l) => ctx.log.info(l), offlineFix: 'build once with the network into this cache, or build from a bundle (`build --bundle`)' });
  return paths.map((file, i) => ({ file, pkg: pinned[i]! }));
}

/**
 * Inside a root about to be entered with a chroot session: a repository of exactly these .debs in
 * `<root>/<stage>/repo`, and apt configured to read only it (the guest's own sources stay as they
 * are, unread). Returns what removes the configuration and the indices apt copied from it again.
 */
export async function stageLockedRepository(root: string, stage: string, debs: { file: string; pkg: PinnedPackage }[], log: StepLog, signal?: AbortSignal): Promise<() => void> {
  await writeLocalRepository(join(root, stage, 'repo'), 'locked', debs, log, signal);
  mkdirSync(join(root, stage, 'no-sources'), { recursive: true });
  writeFileSync(join(root, stage, 'locked.list'), `deb [trusted=yes] file:/${stage}/repo locked main\n`);
  const conf = join(root, LOCKED_APT_CONF);
  writeFileSync(conf, `Dir::Etc::SourceList "/${stage}/locked.list";\nDir::Etc::SourceParts "/${stage}/no-sources";\n`);
  return () => {
    rmSync(conf, { force: true });
    const lists = join(root, 'var/lib/apt/lists');
    const mark = `${stage.replace(/\//g, '_')}_repo_dists_locked`;
    if (existsSync(lists)) for (const f of readdirSync(lists)) if (f.includes(mark)) rmSync(join(lists, f), { force: true });
  };
}

const LOCKED_APT_CONF = 'etc/apt/apt.conf.d/00gpu-guest-locked';

/**
 * What apt installed or upgraded (`before` → `after`, the named packages aside) against the locked
 * set: exactly it, or with `subset` only packages of it at their locked versions (a set locked
 * against the base rootfs may hold what an earlier step already brought). E_LOCK_MISMATCH otherwise.
 */
export function checkAddedPackages(what: string, before: Map<string, string>, after: Map<string, string>, locked: PinnedPackage[], o: { ignore?: string[]; subset?: boolean } = {}): void {
  const added = new Map([...after].filter(([name, version]) => before.get(name) !== version && !o.ignore?.includes(name)));
  const want = new Map(locked.map((p) => [p.name, p.version]));
  const differences: string[] = [];
  for (const [name, version] of want) {
    if (added.has(name) ? added.get(name) === version : o.subset) continue;
    differences.push(added.has(name) ? `${name}: ${added.get(name)} installed, ${version} locked` : `${name} ${version}: locked, not installed${before.has(name) ? ` (the rootfs has ${before.get(name)})` : ''}`);
  }
  for (const [name, version] of added) if (!want.has(name)) differences.push(`${name} ${version}: installed, not locked`);
  if (differences.length) {
    throw new GuestError('E_LOCK_MISMATCH', `apt installed other packages for ${what} than the lock names (${differences.length} difference(s)): run \`gpu-guest lock\` again`, { details: differences.slice(0, 20) });
  }
}
