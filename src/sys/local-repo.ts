import { mkdirSync, writeFileSync } from 'node:fs';
import { linkOrCopy } from './link.js';
import { basename, join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { sha256Hex } from '../model/json.js';
import type { StepLog } from '../model/step.js';
import { runLogged } from './exec.js';
import type { PinnedPackage } from './apt-private.js';

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
  const override = debs.map(({ pkg }) => `${pkg.name} ${pkg.priority ?? 'optional'} ${pkg.section ?? 'misc'}`).join('\n');
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
