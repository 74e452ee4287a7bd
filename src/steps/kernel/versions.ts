import semver from 'semver';
import { GuestError } from '../../model/errors.js';

/** `6.1` means the newest 6.1.y; `6.1.55` exactly that; anything else is a semver range. */
export function versionRange(spec: string): string {
  if (/^\d+\.\d+$/.test(spec)) return `~${spec}.0`;
  if (/^\d+\.\d+\.\d+$/.test(spec)) return spec;
  if (semver.validRange(spec) === null) {
    throw new GuestError('E_PIPELINE_INVALID', `kernel.version '${spec}' is neither a version (6.1.55) nor a range (6.1, ~6.1.50, >=6.1 <6.2)`);
  }
  return spec;
}

/** kernel.org names drop a zero sublevel (`linux-6.1.tar.xz`) and mark candidates `-rc1`. */
export function kernelToSemver(v: string): string | null {
  const m = /^(\d+)\.(\d+)(?:\.(\d+))?(-rc\d+)?$/.exec(v);
  return m ? `${m[1]}.${m[2]}.${m[3] ?? 0}${m[4] ?? ''}` : null;
}

export function semverToKernel(v: string): string {
  const p = semver.parse(v)!;
  const base = p.patch === 0 ? `${p.major}.${p.minor}` : `${p.major}.${p.minor}.${p.patch}`;
  return p.prerelease.length ? `${base}-${p.prerelease.join('.')}` : base;
}

/** Tarball versions a kernel.org `v6.x/` listing offers. */
export function listedVersions(html: string): string[] {
  const found = new Set<string>();
  for (const m of html.matchAll(/linux-(\d+\.\d+(?:\.\d+)?(?:-rc\d+)?)\.tar\.xz/g)) found.add(m[1]!);
  return [...found];
}

/** The newest listed version in the range; release candidates only when the range names one. */
export function pickVersion(spec: string, listed: string[]): string | undefined {
  const range = versionRange(spec);
  const candidates = listed.map(kernelToSemver).filter((v): v is string => v !== null);
  const best = semver.maxSatisfying(candidates, range, { includePrerelease: /-rc/.test(spec) });
  return best ? semverToKernel(best) : undefined;
}

/** Folder of a major version on kernel.org: `v6.x`. */
export function majorFolder(spec: string): string {
  const min = semver.minVersion(versionRange(spec));
  if (!min) throw new GuestError('E_PIPELINE_INVALID', `kernel.version '${spec}' matches no version`);
  return `v${min.major}.x`;
}

/** The sha256 of one file in a sha256sums.asc (clearsigned or not). */
export function sha256FromSums(text: string, file: string): string | undefined {
  for (const line of text.split('\n')) {
    const m = /^([0-9a-f]{64})\s+\*?(\S+)$/.exec(line.trim());
    if (m && m[2] === file) return m[1];
  }
  return undefined;
}

/** VERSION.PATCHLEVEL.SUBLEVEL from a kernel's top Makefile. */
export function versionFromMakefile(text: string): string | undefined {
  const get = (k: string) => new RegExp(`^${k}\\s*=\\s*(\\S*)`, 'm').exec(text)?.[1];
  const [v, p, s] = [get('VERSION'), get('PATCHLEVEL'), get('SUBLEVEL')];
  if (!v || !p) return undefined;
  return s && s !== '0' ? `${v}.${p}.${s}` : `${v}.${p}`;
}

export function versionSatisfies(version: string, spec: string): boolean {
  const v = kernelToSemver(version);
  return v !== null && semver.satisfies(v, versionRange(spec), { includePrerelease: true });
}
