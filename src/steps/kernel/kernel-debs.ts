import { chmodSync, copyFileSync, mkdirSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { findOnPath } from '../../sys/which.js';
import { GuestError } from '../../model/errors.js';
import { sha256File } from '../../sys/hash.js';
import type { KernelBuildResult, KernelPackagesResult, KernelSourceResult, PackageFile } from '../../model/results.js';
import { readDebFields } from '../../sys/deb.js';
import { runLogged } from '../../sys/exec.js';
import { requireHostTools } from '../../sys/host-tools.js';
import { ccache, jobs, kbuildEnv, kernelTreePaths, makeArgs, makeAtStablePath } from '../../sys/kbuild.js';
import type { StepContext, StepDefinition } from '../../model/step.js';

/**
 * kernel-debs: `make bindeb-pkg` (or binrpm-pkg) on a copy of the object tree kernel-build left, so
 * nothing is compiled twice and the build entry stays untouched. Package names and versions are
 * read back from the files, never predicted.
 */
type PackagesParams = { format: 'deb' | 'rpm'; packageVersion: string | null; sourceDate: number };
type PackagesInputs = { source: KernelSourceResult; build: KernelBuildResult };

export const kernelDebs: StepDefinition<PackagesParams, PackagesInputs, KernelPackagesResult> = {
  kind: 'kernel-debs',
  version: 5,
  resources: { cpu: 'all' },
  publish: 'debs',
  run: (ctx) => packageKernel(ctx),
};

async function packageKernel(ctx: StepContext<PackagesParams, PackagesInputs>): Promise<KernelPackagesResult> {
  await requireHostTools('kernel-debs');
  const { format, packageVersion } = ctx.params;
  const build = ctx.upstream.build;
  const sourceTree = join(ctx.upstream.source.dir, 'tree');
  const pkgDir = join(ctx.workDir, 'pkg');
  mkdirSync(pkgDir);
  // cp -a keeps timestamps; the stable path keeps the recorded paths: make finds everything up to date
  await runLogged(ctx.log, 'cp', ['-a', join(build.dir, 'build'), join(pkgDir, 'build')], { signal: ctx.signal });
  const at = kernelTreePaths();
  const trees = { folder: pkgDir, source: sourceTree };
  const version = packageVersion ?? `${build.result.version}-1`;
  // the compiler the tree was built with: another command line would make kbuild compile it all again
  const cc = await ccache(ctx.cacheDir, build.result.compiler);
  const env = kbuildEnv(ctx.sourceDate, { ...cc.env, KDEB_PKGVERSION: version, PATH: `${dateShim(ctx.workDir)}:${process.env.PATH}` });
  const make = (args: string[]) => makeAtStablePath(ctx.log, trees, args, { env, signal: ctx.signal });
  if (format === 'rpm') {
    if (!(await findOnPath('rpmbuild'))) throw new GuestError('E_MISSING_TOOL', 'kernel.packages is rpm, but rpmbuild is not installed (run as root: apt-get install -y rpm; or use packages: deb)');
    // rpmbuild's top folder through ~/.rpmmacros of a private HOME: no path goes through a shell string
    const top = join(ctx.workDir, 'rpmbuild');
    const home = join(ctx.workDir, 'home');
    mkdirSync(home);
    writeFileSync(join(home, '.rpmmacros'), `%_topdir ${top}\n`);
    const rpmMake = (args: string[]) => makeAtStablePath(ctx.log, trees, args, { env: { ...env, HOME: home }, signal: ctx.signal });
    await rpmMake([...makeArgs(at.source, at.objtree, `-j${jobs()}`, 'binrpm-pkg'), ...cc.args]);
    return collectRpms(ctx, join(top, 'RPMS'), build.result.kernelRelease);
  }
  await make([...makeArgs(at.source, at.objtree, `-j${jobs()}`, 'bindeb-pkg'), ...cc.args]);
  // bindeb-pkg writes the packages next to the object tree
  return collectDebs(ctx, pkgDir, build.result.kernelRelease);
}

/**
 * Linux 6.1's mkdebian stamps the changelog with `date -R` and ignores SOURCE_DATE_EPOCH: a `date`
 * first on PATH answers with the source date unless asked about another one.
 */
function dateShim(workDir: string): string {
  const dir = join(workDir, 'shim');
  mkdirSync(dir, { recursive: true });
  const script = `#!/bin/sh\ncase " $* " in *" -d"*|*" --date"*|*" -r"*|*" --reference"*|*" -f"*|*" --file"*) exec /bin/date "$@";; esac\nexec /bin/date -d "@$SOURCE_DATE_EPOCH" "$@"\n`;
  writeFileSync(join(dir, 'date'), script);
  chmodSync(join(dir, 'date'), 0o755);
  return dir;
}

async function collectDebs(ctx: StepContext<PackagesParams, PackagesInputs>, dir: string, release: string): Promise<KernelPackagesResult> {
  const debs = readdirSync(dir).filter((f) => f.endsWith('.deb')).sort();
  const packages: PackageFile[] = [];
  for (const file of debs) {
    const f = await readDebFields(ctx.log, join(dir, file), ['Package', 'Version', 'Architecture'], ctx.signal);
    copyFileSync(join(dir, file), join(ctx.outDir, file));
    packages.push({ file, package: f.Package, version: f.Version, architecture: f.Architecture, sha256: await sha256File(join(dir, file)) });
  }
  const names = packages.map((p) => p.package);
  requireKernelPackage('deb', names, release);
  return { kernelRelease: release, format: 'deb', packages, headers: names.includes(`linux-headers-${release}`) ? `linux-headers-${release}` : null };
}

async function collectRpms(ctx: StepContext<PackagesParams, PackagesInputs>, dir: string, release: string): Promise<KernelPackagesResult> {
  const found = (await runLogged(ctx.log, 'find', [dir, '-name', '*.rpm'], { capture: true })).trim().split('\n').filter(Boolean).sort();
  const packages: PackageFile[] = [];
  for (const path of found) {
    const file = path.split('/').pop()!;
    // read back from the package, never predicted from the file name
    const q = (await runLogged(ctx.log, 'rpm', ['-qp', '--queryformat', '%{NAME} %{VERSION}-%{RELEASE} %{ARCH}', path], { capture: true })).trim().split(' ');
    copyFileSync(path, join(ctx.outDir, file));
    packages.push({ file, package: q[0] ?? '', version: q[1] ?? '', architecture: q[2] ?? '', sha256: await sha256File(path) });
  }
  requireKernelPackage('rpm', packages.map((p) => p.package), release);
  return { format: 'rpm', kernelRelease: release, packages };
}

/** The packaging must have produced the kernel image package itself (names read back from the files). */
export function requireKernelPackage(format: 'deb' | 'rpm', names: string[], release: string): void {
  const wanted = format === 'deb' ? `linux-image-${release}` : 'kernel';
  if (!names.includes(wanted)) {
    throw new GuestError('E_PACKAGE_MISSING', `${format === 'deb' ? 'bindeb-pkg' : 'binrpm-pkg'} produced no ${wanted} package (got: ${names.join(', ') || 'nothing'}); see the kernel-debs task log`);
  }
}
