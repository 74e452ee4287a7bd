import { execFile } from 'node:child_process';
import { existsSync, lstatSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, dirname, join, relative } from 'node:path';
import { promisify } from 'node:util';
import { GuestError } from '../model/errors.js';
import type { StepLog } from '../model/step.js';
import { readLock, type LockFile } from '../engine/lock.js';
import type { PinnedPackage } from './apt-private.js';
import { runLogged } from './exec.js';
import { linkOrCopy } from './link.js';
import { findOnPath } from './which.js';
import { sha256File } from './hash.js';
import { debStoreName, writeLocalRepository } from './local-repo.js';
import { BUNDLED_PIPELINE_DIR, bundledPipelinePath } from '../pipeline/bundled.js';

const run = promisify(execFile);

/** The bundle's format version: a reader refuses any other. */
export const BUNDLE_FORMAT = 1;
export const BUNDLE_INDEX = 'bundle.json';
export const BUNDLE_LOCK = 'lock.json';
export const BUNDLE_KEY = 'bundle-key.gpg';
/** The index's detached signature: with it, every file's sha256 is signed, not only the repository's. */
export const BUNDLE_SIGNATURE = 'bundle.json.asc';

/**
 * `bundle.json`, the bundle's table of contents: every other file with its size and sha256. What
 * `bundle verify` and `build --bundle` check before anything is used.
 */
export interface BundleIndex {
  gpuGuestBundle: number;
  pipeline: string;
  sourceDate: number;
  /** Suite of the Debian repository at the bundle's root (dists/<suite>/, pool/main/). */
  suite?: string;
  files: { path: string; size: number; sha256: string }[];
}

/** A locked rootfs package and the file it is in the cache's store. */
export interface BundledDeb {
  file: string;
  pkg: PinnedPackage;
}

/**
 * Writes the bundle: the lock, every store file (`downloads/…`), and a Debian-format repository of
 * the locked packages at the bundle's root (pool/main/, dists/<suite>/ with Packages made by
 * dpkg-scanpackages, and InRelease signed with a key made for this bundle, whose public part is
 * bundle-key.gpg). One tar, entries sorted, owned by root, dated the source date. Written to a
 * temporary name and renamed: a failed fetch leaves no bundle.
 */
export async function writeBundle(out: string, stage: string, o: { lock: LockFile; downloads: { file: string; path: string }[]; debs: BundledDeb[]; suite?: string; signingKey?: string; log: StepLog; signal?: AbortSignal }): Promise<BundleIndex> {
  mkdirSync(stage, { recursive: true });
  const gpg = await bundleGpg(join(stage, '..', 'gnupg'), o.signingKey, o.log, o.signal);
  writeFileSync(join(stage, BUNDLE_LOCK), `${JSON.stringify(o.lock, null, 2)}\n`);
  for (const d of o.downloads) {
    mkdirSync(dirname(join(stage, d.path)), { recursive: true });
    linkOrCopy(d.file, join(stage, d.path));
  }
  if (o.debs.length) {
    await writeLocalRepository(stage, o.suite!, o.debs, o.log, o.signal);
    await gpg(['--yes', '--clearsign', '--digest-algo', 'SHA256', '-o', join(stage, 'dists', o.suite!, 'InRelease'), join(stage, 'dists', o.suite!, 'Release')]);
  }
  await gpg(['--yes', '--export', '-o', join(stage, BUNDLE_KEY)]);
  rmSync(join(stage, 'override'), { force: true });
  const files: BundleIndex['files'] = [];
  for (const path of listFiles(stage)) files.push({ path, size: statSync(join(stage, path)).size, sha256: await sha256File(join(stage, path)) });
  const index: BundleIndex = { gpuGuestBundle: BUNDLE_FORMAT, pipeline: o.lock.pipeline, sourceDate: o.lock.sourceDate, ...(o.debs.length ? { suite: o.suite } : {}), files };
  writeFileSync(join(stage, BUNDLE_INDEX), `${JSON.stringify(index, null, 2)}\n`);
  await gpg(['--yes', '--detach-sign', '--armor', '--digest-algo', 'SHA256', '-o', join(stage, BUNDLE_SIGNATURE), join(stage, BUNDLE_INDEX)]);
  const part = `${out}.${process.pid}.part`;
  try {
    await runLogged(o.log, 'tar', ['--sort=name', `--mtime=@${o.lock.sourceDate}`, '--owner=0', '--group=0', '--numeric-owner', '--format=gnu', '-cf', part, '-C', stage, '.'], { signal: o.signal });
    renameSync(part, out);
  } catch (err) {
    rmSync(part, { force: true });
    throw err;
  }
  return index;
}

/**
 * gpg with a home of its own holding the bundle's signing key: the user's (`fetch --signing-key`,
 * an exported secret key without passphrase) or one made for this bundle (ed25519, no passphrase;
 * its public part ships in the bundle either way).
 */
async function bundleGpg(home: string, signingKey: string | undefined, log: StepLog, signal?: AbortSignal): Promise<(args: string[]) => Promise<string>> {
  if (!(await findOnPath('gpg'))) throw new GuestError('E_MISSING_TOOL', 'fetch --bundle signs the bundle with gpg, which is not installed (apt-get install gnupg)');
  mkdirSync(home, { recursive: true, mode: 0o700 });
  const gpg = (args: string[]) => runLogged(log, 'gpg', ['--homedir', home, '--batch', '--pinentry-mode', 'loopback', '--passphrase', '', ...args], { signal, capture: true, quiet: true });
  if (!signingKey) {
    await gpg(['--quick-gen-key', 'gpu-guest bundle <bundle@gpu-guest.invalid>', 'ed25519', 'sign', 'never']);
    return gpg;
  }
  try {
    await gpg(['--import', signingKey]);
  } catch (err) {
    throw new GuestError('E_USAGE', `--signing-key ${signingKey}: gpg cannot import it (${log.tail(3).find((l) => l.startsWith('gpg:')) ?? (err as Error).message}): give a secret key exported with \`gpg --export-secret-keys KEYID > FILE\``, { cause: err });
  }
  const secret = await gpg(['--list-secret-keys', '--with-colons']);
  if (!/^sec:/m.test(secret)) throw new GuestError('E_USAGE', `--signing-key ${signingKey}: it holds no secret key (a public key cannot sign): export it with \`gpg --export-secret-keys KEYID > FILE\``);
  try {
    await gpg(['--yes', '--clearsign', '-o', join(home, 'probe.asc'), signingKey]);
  } catch (err) {
    throw new GuestError('E_USAGE', `--signing-key ${signingKey}: its secret key cannot sign without a passphrase (remove it for the export, or sign with a key kept for bundles)`, { cause: err });
  }
  return gpg;
}

/** Regular files below dir, as sorted relative paths; anything else (a link, a device) is refused. */
function listFiles(dir: string, root = dir): string[] {
  const out: string[] = [];
  for (const name of readdirSync(dir).sort()) {
    const path = join(dir, name);
    const st = lstatSync(path);
    if (st.isDirectory()) out.push(...listFiles(path, root));
    else if (st.isFile()) out.push(relative(root, path));
    else throw new GuestError('E_BUNDLE_CORRUPT', `bundle member ${relative(root, path)} is not a regular file (a bundle holds only files and folders)`);
  }
  return out;
}

/**
 * Unpacks a bundle into `into` and checks it whole: its index, every file's size and sha256, no
 * file it does not list, the repository's signature against the bundled key, and every locked
 * package present with the lock's sha256. Every problem is named (E_BUNDLE_CORRUPT); nothing of a
 * bundle that fails is used.
 */
export async function unpackBundle(file: string, into: string, log: StepLog, signal?: AbortSignal, trustedKey?: string): Promise<{ index: BundleIndex; lock: LockFile; signedBy: 'trusted key' | 'bundled key' | 'unsigned' }> {
  assertBundleFile(file);
  mkdirSync(into, { recursive: true });
  try {
    // GNU tar refuses members with `..` and strips a leading /: nothing lands outside `into`
    await runLogged(log, 'tar', ['-xf', file, '-C', into, '--no-same-owner', '--no-same-permissions'], { signal });
  } catch (err) {
    const said = log.tail(5).find((l) => l.startsWith('tar:') && !l.includes('Exiting with failure')) ?? (err as Error).message.split('\n')[0];
    throw new GuestError('E_BUNDLE_CORRUPT', `${file} is not a readable tar archive (${said}): fetch the bundle again`, { cause: err });
  }
  const index = readIndex(file, into);
  // the index first: with a trusted key, a bundle whose index it did not sign is not read further
  const signedBy = await checkIndexSignature(file, into, trustedKey);
  const problems: string[] = [];
  const present = new Set(listFiles(into).filter((p) => p !== BUNDLE_INDEX && p !== BUNDLE_SIGNATURE));
  for (const f of index.files) {
    if (!present.delete(f.path)) {
      problems.push(`${f.path}: missing`);
      continue;
    }
    const path = join(into, f.path);
    const size = statSync(path).size;
    if (size !== f.size) problems.push(`${f.path}: ${size} bytes, the index says ${f.size}`);
    else if ((await sha256File(path)) !== f.sha256) problems.push(`${f.path}: sha256 differs from the index's ${f.sha256.slice(0, 12)}…`);
  }
  for (const extra of present) problems.push(`${extra}: not in the bundle's index`);
  if (problems.length) throw corrupt(file, problems);
  const lock = JSON.parse(readFileSync(join(into, BUNDLE_LOCK), 'utf8')) as LockFile;
  if (index.suite) {
    await checkSignature(file, into, index.suite, trustedKey);
    const have = new Set(index.files.map((f) => f.sha256));
    const missing = bundledPackages(lock).filter((p) => !have.has(p.sha256));
    if (missing.length) throw corrupt(file, missing.map((p) => `${p.name} ${p.version}: locked, not in the bundle with the lock's sha256`));
  }
  return { index, lock, signedBy };
}

/**
 * bundle.json's detached signature against the trusted key (when given: it must be there and
 * good) or the bundled key. A bundle without one (made before bundles signed their index) passes
 * only without a trusted key.
 */
async function checkIndexSignature(file: string, into: string, trustedKey?: string): Promise<'trusted key' | 'bundled key' | 'unsigned'> {
  const signature = join(into, BUNDLE_SIGNATURE);
  if (!existsSync(signature)) {
    if (trustedKey) throw new GuestError('E_BUNDLE_CORRUPT', `${file}: its ${BUNDLE_INDEX} is not signed, so --trusted-key ${trustedKey} cannot vouch for it: make the bundle again with \`gpu-guest fetch --bundle … --signing-key\``);
    return 'unsigned';
  }
  await gpgvCheck(file, trustedKey ?? join(into, BUNDLE_KEY), [signature, join(into, BUNDLE_INDEX)], `${BUNDLE_INDEX}'s signature`, trustedKey);
  return trustedKey ? 'trusted key' : 'bundled key';
}

/**
 * The pipeline a bundle carries (`fetch --bundle` puts it there with its local inputs), unpacked
 * into a temporary folder that lives as long as this process, each file checked against the
 * bundle's index. For build, plan and verify given --bundle without --vendor or --pipeline.
 */
export async function extractBundledPipeline(file: string): Promise<string> {
  assertBundleFile(file);
  const dir = mkdtempSync(join(tmpdir(), 'gpu-guest-bundled-pipeline-'));
  process.once('exit', () => rmSync(dir, { recursive: true, force: true }));
  await extractMember(file, BUNDLE_INDEX, dir);
  const index = readIndex(file, dir);
  const pipeline = bundledPipelinePath(index.files.map((f) => f.path));
  if (!pipeline) throw new GuestError('E_USAGE', `bundle ${file} carries no pipeline (an older gpu-guest made it): give --vendor or --pipeline as when it was fetched`);
  const members = index.files.filter((f) => f.path.startsWith(`${BUNDLED_PIPELINE_DIR}/`));
  await run('tar', ['-xf', file, '-C', dir, '--no-same-owner', `./${BUNDLED_PIPELINE_DIR}`]);
  const damaged: string[] = [];
  for (const f of members) {
    const at = join(dir, f.path);
    if (!existsSync(at) || (await sha256File(at)) !== f.sha256) damaged.push(`${f.path}: ${existsSync(at) ? 'sha256 differs from the index' : 'missing'}`);
  }
  if (damaged.length) throw corrupt(file, damaged);
  return join(dir, pipeline);
}

/** The lock a bundle carries, read straight from the tar (nothing else is unpacked or checked). */
export async function readBundleLock(file: string): Promise<LockFile> {
  assertBundleFile(file);
  const dir = mkdtempSync(join(tmpdir(), 'gpu-guest-bundle-lock-'));
  try {
    await extractMember(file, BUNDLE_LOCK, dir);
    return readLock(join(dir, BUNDLE_LOCK));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

function assertBundleFile(file: string): void {
  if (!existsSync(file) || !statSync(file).isFile()) throw new GuestError('E_USAGE', `bundle ${file}: no such file (make one with \`gpu-guest fetch --bundle ${basename(file)}\`)`);
}

/** One file of a bundle unpacked into dir, without the rest; a tar that has none is no bundle. */
async function extractMember(file: string, member: string, dir: string): Promise<void> {
  try {
    await run('tar', ['-xf', file, '-C', dir, '--no-same-owner', `./${member}`]);
  } catch (err) {
    const said = ((err as { stderr?: string }).stderr ?? '').trim().split('\n')[0];
    throw new GuestError('E_BUNDLE_CORRUPT', `${file}: no ${member} could be read from it (${said || (err as Error).message}): is it a bundle from \`gpu-guest fetch --bundle\`?`, { cause: err });
  }
}

function readIndex(file: string, into: string): BundleIndex {
  const path = join(into, BUNDLE_INDEX);
  if (!existsSync(path)) throw new GuestError('E_BUNDLE_CORRUPT', `${file} has no ${BUNDLE_INDEX}: not a gpu-guest bundle (make one with \`gpu-guest fetch --bundle\`)`);
  let index: BundleIndex;
  try {
    index = JSON.parse(readFileSync(path, 'utf8')) as BundleIndex;
  } catch (err) {
    throw new GuestError('E_BUNDLE_CORRUPT', `${file}: ${BUNDLE_INDEX} is not JSON (${(err as Error).message})`, { cause: err });
  }
  if (index.gpuGuestBundle !== BUNDLE_FORMAT || !Array.isArray(index.files)) throw new GuestError('E_BUNDLE_CORRUPT', `${file}: bundle format ${String(index.gpuGuestBundle)}, this gpu-guest reads ${BUNDLE_FORMAT}`);
  if (!index.files.some((f) => f.path === BUNDLE_LOCK)) throw new GuestError('E_BUNDLE_CORRUPT', `${file} carries no ${BUNDLE_LOCK}`);
  return index;
}

async function checkSignature(file: string, into: string, suite: string, trustedKey?: string): Promise<void> {
  await gpgvCheck(file, trustedKey ?? join(into, BUNDLE_KEY), [join(into, 'dists', suite, 'InRelease')], "the repository's InRelease", trustedKey);
}

/** gpgv against one keyring; a bad or foreign signature is E_BUNDLE_CORRUPT naming what it covers. */
async function gpgvCheck(file: string, keyring: string, args: string[], what: string, trustedKey?: string): Promise<void> {
  if (!(await findOnPath('gpgv'))) throw new GuestError('E_MISSING_TOOL', 'checking the bundle\'s signatures needs gpgv, which is not installed (apt-get install gpgv)');
  if (trustedKey && !existsSync(keyring)) throw new GuestError('E_USAGE', `--trusted-key ${trustedKey}: no such file`);
  const binary = binaryKeyring(keyring);
  try {
    await run('gpgv', ['--keyring', binary.path, ...args]);
  } catch (err) {
    const why = ((err as { stderr?: string }).stderr ?? '').trim().split('\n').pop();
    throw new GuestError('E_BUNDLE_CORRUPT', `${file}: ${what} does not verify against ${trustedKey ? `--trusted-key ${trustedKey}` : "the bundle's key"} (${why})`, { cause: err });
  } finally {
    binary.dispose();
  }
}

/** gpgv reads binary keyrings only: an ASCII-armored key (`gpg --export --armor`) is decoded into a temporary file first. */
function binaryKeyring(file: string): { path: string; dispose: () => void } {
  const armored = /^-----BEGIN PGP PUBLIC KEY BLOCK-----\r?\n([\s\S]*?)-----END PGP PUBLIC KEY BLOCK-----/m.exec(readFileSync(file).toString('latin1'));
  if (!armored) return { path: file, dispose: () => undefined };
  // the body follows the first blank line; a line starting with = is the checksum
  const body = armored[1]!.split(/\r?\n/);
  const from = body.findIndex((l) => l.trim() === '');
  const dir = mkdtempSync(join(tmpdir(), 'gpu-guest-keyring-'));
  writeFileSync(join(dir, 'keyring.gpg'), Buffer.from(body.slice(from + 1).filter((l) => !l.startsWith('=')).join(''), 'base64'));
  return { path: join(dir, 'keyring.gpg'), dispose: () => rmSync(dir, { recursive: true, force: true }) };
}

function corrupt(file: string, problems: string[]): GuestError {
  return new GuestError('E_BUNDLE_CORRUPT', `${file} is damaged: ${problems[0]}${problems.length > 1 ? ` (and ${problems.length - 1} more)` : ''}; fetch the bundle again`, { details: problems });
}

/** The packages of every locked rootfs in the lock. */
export function bundledPackages(lock: LockFile): PinnedPackage[] {
  const out: PinnedPackage[] = [];
  for (const t of Object.values(lock.tasks)) {
    const locked = t.resolved.locked as { packages?: PinnedPackage[] } | undefined;
    if (locked?.packages) out.push(...locked.packages);
  }
  return out;
}

/**
 * Moves a verified bundle's files into the cache's stores, where the steps look before the
 * network: `downloads/…` as they are, each locked package to `debs/<sha256>_<file>`.
 */
export function importBundle(into: string, index: BundleIndex, lock: LockFile, cacheDir: string): number {
  const bySha = new Map(bundledPackages(lock).map((p) => [p.sha256, p]));
  let moved = 0;
  for (const f of index.files) {
    let target: string | undefined;
    if (f.path.startsWith('downloads/')) target = f.path;
    else if (f.path.startsWith('pool/') && bySha.has(f.sha256)) target = `debs/${debStoreName(bySha.get(f.sha256)!)}`;
    if (!target) continue;
    const dest = join(cacheDir, target);
    mkdirSync(dirname(dest), { recursive: true });
    if (!existsSync(dest)) renameSync(join(into, f.path), dest);
    moved++;
  }
  return moved;
}
