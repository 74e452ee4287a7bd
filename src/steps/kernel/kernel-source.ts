import { execFile } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, dirname, join } from 'node:path';
import { downloadsPath, type StoreFile } from '../../sys/store.js';
import { GuestError } from '../../model/errors.js';
import { sha256File } from '../../sys/hash.js';
import type { JsonObject } from '../../model/json.js';
import type { KernelSourceResult } from '../../model/results.js';
import { aptShow } from '../../sys/apt.js';
import { readAptSources } from '../../sys/apt-sources.js';
import { requireNetwork } from '../../sys/offline.js';
import { checkPinnedFile, checkSha256, downloadVerified, markUsed, stepDownloadOptions, fetchText } from '../../sys/download.js';
import { redact } from '../../model/redact.js';
import { runLogged } from '../../sys/exec.js';
import { requireHostTools } from '../../sys/host-tools.js';
import { assertTarArchive, linksEscaping } from '../../sys/archive.js';
import type { ResolveContext, StepContext, StepDefinition } from '../../model/step.js';
import { majorFolder, listedVersions, pickVersion, sha256FromSums, versionFromMakefile, versionSatisfies } from './versions.js';

type SourceParams = {
  version: string;
  mirrors?: string[] | null;
  tarball?: string | null;
  sha256?: string | null;
  /** Filled by resolve(): */
  resolvedVersion?: string;
  tarballName?: string;
  aptVersion?: string;
  /** apt: the .deb's path below the mirror (where `gpu-guest fetch` downloads it from). */
  aptFilename?: string;
};

/**
 * kernel-source: fetches the kernel tarball (kernel.org-style mirrors, a URL, a local file or
 * Debian's linux-source package), verifies its sha256, and extracts it to out/tree.
 */
export const kernelSource: StepDefinition<SourceParams, Record<string, never>, KernelSourceResult> = {
  kind: 'kernel-source',
  version: 1,
  resources: { cpu: 1 },
  undigested: ['tree'],
  resolve: (params, files, ctx) => resolveSource(params, files, ctx),
  // once the sha256 is known, the mirrors are only where the bytes come from
  identity: ({ mirrors, aptFilename, ...rest }) => (rest.sha256 ? rest : { mirrors, aptFilename, ...rest }) as JsonObject,
  downloads: (p) => tarballDownload(p),
  // a local tarball is checked at plan time: its pin and that it is a tar archive at all
  preflight: async (p, files, ctx) => {
    if (!files.tarball) return;
    const file = files.tarball as string;
    if (p.sha256) await checkPinnedFile(file, p.sha256, 'kernel tarball', 'kernel.sha256 says', ctx.sha256);
    assertTarArchive(file, 'kernel tarball');
  },
  run: (ctx) => fetchAndExtract(ctx),
};

async function resolveSource(p: SourceParams, files: StepContext['files'], ctx: ResolveContext): Promise<SourceParams> {
  const out = { ...p };
  if (files.tarball) return out; // a local file: keyed by its content digest
  if (p.tarball?.startsWith('apt:')) {
    // remembered against apt's own state: a no-op build does not wait for apt-cache
    const pkg = await aptShow(p.tarball.slice(4), { dir: join(ctx.cacheDir, 'resolutions'), write: ctx.network });
    return { ...out, aptVersion: pkg.version, sha256: pkg.sha256, aptFilename: pkg.filename };
  }
  if (p.tarball) {
    if (!p.sha256) throw new GuestError('E_PIPELINE_INVALID', `kernel.source.tarball ${redact(p.tarball)} is a URL: pin its kernel.sha256 so the download can be verified`);
    return out;
  }
  const mirrors = p.mirrors ?? [];
  const folder = majorFolder(p.version);
  let version = /^\d+\.\d+\.\d+$/.test(p.version) ? p.version : undefined;
  if (!version || !p.sha256) {
    if (!ctx.network) throw new GuestError('E_NEEDS_NETWORK', `kernel ${p.version} needs the mirror's listing for its exact version and sha256`);
    if (!version) {
      const listing = await fetchText(mirrors.map((m) => `${m.replace(/\/$/, '')}/${folder}/`), `the kernel listing ${folder}/`, ctx.signal);
      version = pickVersion(p.version, listedVersions(listing.text));
      if (!version) throw new GuestError('E_NOT_FOUND', `kernel ${p.version}: no matching version in ${redact(listing.url)} (check kernel.version)`);
    }
  }
  const tarballName = `linux-${version}.tar.xz`;
  let sha256 = p.sha256 ?? undefined;
  if (!sha256) {
    const sums = await fetchText(mirrors.map((m) => `${m.replace(/\/$/, '')}/${folder}/sha256sums.asc`), `${folder}/sha256sums.asc`, ctx.signal);
    sha256 = sha256FromSums(sums.text, tarballName);
    if (!sha256) throw new GuestError('E_NOT_FOUND', `kernel ${version}: ${tarballName} is not listed in ${redact(sums.url)} (no such version: check kernel.version)`);
    if (files.keyring) await verifySignature(sums.text, files.keyring as string, ctx);
  }
  return { ...out, resolvedVersion: version, tarballName, sha256 };
}

async function verifySignature(text: string, keyring: string, ctx: ResolveContext): Promise<void> {
  // a private temp folder, not the cache: resolution also runs for `plan --resolve`, which writes nothing there
  const dir = mkdtempSync(join(tmpdir(), 'gpu-guest-gpgv-'));
  const file = join(dir, 'sha256sums.asc');
  try {
    writeFileSync(file, text);
    await new Promise<void>((resolve, reject) => {
      execFile('gpgv', ['--keyring', keyring, file], (err, _out, stderr) => {
        if (!err) return resolve();
        const missing = (err as NodeJS.ErrnoException).code === 'ENOENT';
        reject(new GuestError(missing ? 'E_MISSING_TOOL' : 'E_SIGNATURE', missing ? 'gpgv is not installed (apt-get install gpgv)' : `sha256sums.asc: signature does not verify against ${keyring} (${stderr.trim().split('\n').pop()})`));
      });
    });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

async function fetchAndExtract(ctx: StepContext<SourceParams>): Promise<KernelSourceResult> {
  await requireHostTools('kernel-source');
  const p = ctx.params;
  const { tarball, origin, name } = await obtainTarball(ctx, p);
  const digest = await sha256File(tarball);
  ctx.log.info(`tarball ${basename(tarball)} sha256 ${digest}`);
  assertTarArchive(tarball, 'kernel tarball');
  const extract = join(ctx.workDir, 'extract');
  mkdirSync(extract, { recursive: true });
  await runLogged(ctx.log, 'tar', ['-xf', tarball, '-C', extract, '--no-same-owner'], { signal: ctx.signal });
  const escaping = linksEscaping(extract);
  if (escaping.length) {
    throw new GuestError('E_ARCHIVE_UNSAFE', `${name} holds ${escaping.length} link(s) pointing outside the extracted tree (not a genuine kernel source tarball)`, { details: escaping.slice(0, 20) });
  }
  const top = findTopDir(extract, name);
  const makefile = readFileSync(join(extract, top, 'Makefile'), 'utf8');
  const version = versionFromMakefile(makefile)!;
  if (!versionSatisfies(version, p.resolvedVersion ?? p.version)) {
    throw new GuestError('E_VERSION_MISMATCH', `${name} holds Linux ${version}, but kernel.version asks for ${p.resolvedVersion ?? p.version} (fix kernel.version or the source)`);
  }
  renameSync(join(extract, top), join(ctx.outDir, 'tree'));
  ctx.log.info(`extracted Linux ${version} (top folder ${top}/)`);
  return { version, sha256: digest, origin, topDir: top };
}

async function obtainTarball(ctx: StepContext<SourceParams>, p: SourceParams): Promise<{ tarball: string; origin: string; name: string }> {
  if (ctx.files.tarball) {
    const file = ctx.files.tarball as string;
    if (p.sha256) await checkPinnedFile(file, p.sha256, 'kernel tarball', 'kernel.sha256 says');
    return { tarball: file, origin: `local ${basename(file)}`, name: basename(file) };
  }
  if (p.tarball?.startsWith('apt:')) return fromAptPackage(ctx, p.tarball.slice(4), p);
  const [file] = tarballDownload(p);
  const { urls, what } = file!;
  const dest = join(ctx.cacheDir, file!.path);
  await downloadVerified({ urls, dest, sha256: p.sha256!, what, ...stepDownloadOptions(ctx), offlineFix: 'build once with the network into this cache, or set kernel.source.tarball to a local file' });
  return { tarball: dest, name: what.replace(/^kernel tarball /, ''), origin: urls.length === 1 ? redact(urls[0]!) : `mirrors (${urls.map(redact).join(', ')})` };
}

/**
 * Where the cache keeps the resolved tarball (or apt's .deb of it), and where it comes from: what
 * `gpu-guest fetch` bundles. None for a local tarball, or an apt source resolved before the .deb's
 * path was recorded.
 */
function tarballDownload(p: SourceParams): StoreFile[] {
  if (!p.sha256) return [];
  if (p.tarball?.startsWith('apt:')) {
    if (!p.aptFilename) return [];
    const urls = readAptSources().filter((s) => /^(https?|file):/.test(s.uri)).map((s) => `${s.uri.replace(/\/$/, '')}/${p.aptFilename}`);
    const name = basename(p.aptFilename);
    return [{ path: downloadsPath(p.sha256, name), urls: [...new Set(urls)], sha256: p.sha256, what: `apt package ${name}` }];
  }
  if (!p.tarball && !p.tarballName) return [];
  const urls = p.tarball ? [p.tarball] : (p.mirrors ?? []).map((m) => `${m.replace(/\/$/, '')}/${majorFolder(p.version)}/${p.tarballName}`);
  const name = p.tarballName ?? basename(new URL(p.tarball!).pathname);
  return [{ path: downloadsPath(p.sha256, name), urls, sha256: p.sha256, what: `kernel tarball ${name}` }];
}

async function fromAptPackage(ctx: StepContext<SourceParams>, pkg: string, p: SourceParams): Promise<{ tarball: string; origin: string; name: string }> {
  const version = p.aptVersion!;
  const dir = join(ctx.workDir, 'apt');
  mkdirSync(dir, { recursive: true });
  // the resolved (or locked) .deb's sha256: the host's candidate may have moved on since
  const expected = p.sha256 ?? (await aptShow(pkg)).sha256;
  const [stored] = tarballDownload(p);
  let deb: string;
  if (stored && existsSync(join(ctx.cacheDir, stored.path))) {
    // fetched earlier into the cache (a bundle, or an earlier build): no apt-get, no network
    deb = join(ctx.cacheDir, stored.path);
    markUsed(deb);
    ctx.log.info(`apt package ${pkg}=${version} from the cache's ${stored.path}`);
  } else {
    requireNetwork(ctx.network, `apt-get download ${pkg}=${version}`, readAptSources().map((s) => s.uri), `set kernel.source.tarball to the tarball ${pkg} installs under /usr/src`);
    await runLogged(ctx.log, 'apt-get', ['download', `${pkg}=${version}`], { cwd: dir, signal: ctx.signal });
    const name = readdirSync(dir).find((f) => f.endsWith('.deb'));
    if (!name) throw new GuestError('E_NOT_FOUND', `apt-get download ${pkg}=${version} produced no .deb`);
    deb = join(dir, name);
  }
  await checkSha256(deb, expected, `apt package ${basename(deb)}`);
  if (stored && !deb.startsWith(ctx.cacheDir)) {
    // kept for the next build, offline ones and `gpu-guest fetch` too (scratch and cache share a file system)
    const keep = join(ctx.cacheDir, stored.path);
    mkdirSync(dirname(keep), { recursive: true });
    renameSync(deb, keep);
    deb = keep;
  }
  await runLogged(ctx.log, 'dpkg-deb', ['-x', deb, join(dir, 'root')], { signal: ctx.signal });
  const src = join(dir, 'root', 'usr', 'src');
  const tar = existsSync(src) ? readdirSync(src).find((f) => /\.tar(\.(xz|gz|bz2|zst))?$/.test(f)) : undefined;
  if (!tar) throw new GuestError('E_NOT_KERNEL_TREE', `apt package ${pkg} holds no kernel tarball under /usr/src (use a linux-source-X package)`);
  return { tarball: join(src, tar), origin: `apt ${pkg}=${version}`, name: `${tar} from ${deb}` };
}

/** The tarball's one top folder, which must look like a kernel tree (its name is not assumed). */
function findTopDir(extract: string, name: string): string {
  const entries = readdirSync(extract).filter((e) => statSync(join(extract, e)).isDirectory());
  const top = entries.length === 1 ? entries[0]! : undefined;
  const looksLikeKernel = (d: string) => ['Makefile', 'Kconfig', 'scripts/kconfig/merge_config.sh', 'arch/x86/Kconfig'].every((f) => existsSync(join(extract, d, f)));
  if (!top || !looksLikeKernel(top) || !versionFromMakefile(readFileSync(join(extract, top, 'Makefile'), 'utf8'))) {
    throw new GuestError('E_NOT_KERNEL_TREE', `${name} is not a Linux kernel source tarball (expected one top folder with Makefile, Kconfig, scripts/kconfig/merge_config.sh and arch/x86)`);
  }
  return top;
}
