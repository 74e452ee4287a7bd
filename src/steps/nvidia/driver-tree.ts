import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { basename, join } from 'node:path';
import { GuestError } from '../../model/errors.js';
import type { KernelBuildResult } from '../../model/results.js';
import type { StepContext, UpstreamOutput } from '../../model/step.js';
import { runLogged } from '../../sys/exec.js';
import { assertMakeselfArchive, checkMakeselfArchive } from '../../sys/makeself.js';
import { obtainDriverRun } from './driver-run.js';

/*
 * What the driver steps share about NVIDIA's driver trees: a checked .run extracted on the host,
 * applying driver.patches, reading a failed build, finding modules.
 */

/**
 * The .run from its pinned path or URL, proven a makeself archive that passes its own --check,
 * extracted into `target` on the host, its .manifest naming driver.version. Returns the .run's path.
 */
export async function extractCheckedRun(ctx: StepContext, o: { path?: string; url: string | null; version: string; sha256: string; what?: string; suffix?: string }, target: string): Promise<string> {
  const what = o.what ?? 'driver';
  const run = await obtainDriverRun(ctx, { ...o, what });
  assertMakeselfArchive(run, what);
  await checkMakeselfArchive(ctx.log, run, what, ctx.signal);
  await extractDriverRun(ctx, run, target);
  const version = manifestVersion(target, basename(run));
  if (version !== o.version) {
    throw new GuestError('E_VERSION_MISMATCH', `driver ${basename(run)} holds driver ${version} (its .manifest), but driver.version says ${o.version}: make them the same`);
  }
  return run;
}

/** `sh X.run -x --target DIR` on the host: the stub's decompressor is the host's. */
async function extractDriverRun(ctx: StepContext, run: string, target: string): Promise<void> {
  try {
    await runLogged(ctx.log, 'sh', [run, '-x', '--target', target], { signal: ctx.signal, quiet: true });
  } catch (err) {
    if (err instanceof GuestError && err.code === 'E_INTERRUPTED') throw err;
    throw new GuestError('E_ARCHIVE_CORRUPT', `driver ${basename(run)} could not be extracted on this host (sh ${basename(run)} -x failed): check the file and that the host has xz-utils`, { cause: err });
  }
}

/** Line 2 of NVIDIA's .manifest is the driver version; a package without one is not NVIDIA's. */
function manifestVersion(dir: string, name: string): string {
  const file = join(dir, '.manifest');
  if (!existsSync(file)) throw new GuestError('E_NOT_MAKESELF', `driver ${name} has no .manifest: it is not an NVIDIA driver package (nvidia-installer installs from the folder holding .manifest)`);
  const version = readFileSync(file, 'utf8').split('\n')[1]?.trim() ?? '';
  if (!/^\d+(\.\d+)+$/.test(version)) throw new GuestError('E_NOT_MAKESELF', `driver ${name}: its .manifest names no driver version on line 2`);
  return version;
}

/** What GNU patch says when a patch does not fit the tree. */
const PATCH_TROUBLE = /FAILED|can't find file|malformed|Reversed|No file to patch|Only garbage/i;

/** Each patch (-p1, in order) must apply whole: a dry run first, so a bad one changes nothing. */
export async function applyPatches(ctx: StepContext, patches: string | string[] | undefined, dir: string, sourceName: string): Promise<void> {
  const list = patches === undefined ? [] : Array.isArray(patches) ? patches : [patches];
  for (const [i, file] of list.entries()) {
    const args = ['-p1', '--forward', '--batch', '--no-backup-if-mismatch', '-d', dir, '-i', file];
    try {
      await runLogged(ctx.log, 'patch', ['--dry-run', ...args], { signal: ctx.signal, explain: (tail) => tail.filter((l) => PATCH_TROUBLE.test(l)).slice(-5) });
    } catch (err) {
      if (err instanceof GuestError && err.code === 'E_INTERRUPTED') throw err;
      const said = err instanceof GuestError ? err.details[0] : undefined;
      throw new GuestError('E_DRIVER_PATCH', `driver.patches[${i}] ${basename(file)} does not apply to ${sourceName}${said ? `: ${said.trim()}` : ''}`, { cause: err, details: err instanceof GuestError ? err.details : [] });
    }
    await runLogged(ctx.log, 'patch', args, { signal: ctx.signal });
    ctx.log.info(`applied ${basename(file)} to ${sourceName}`);
  }
}

/** The compiler's first `error:` line (file:line: error: …), which says why a module did not build. */
export function firstCompilerError(log: string[]): string | undefined {
  const line = log.find((l) => /(^|\s)(fatal )?error: /.test(l) && !/^ERROR: /.test(l));
  return line?.trim().replace(/^.*?(\S+:\d+(:\d+)?: (fatal )?error: )/, '$1');
}

/** Kernel modules under a /lib/modules/<release> folder, relative to it. */
export function findModules(dir: string, prefix = ''): string[] {
  if (!existsSync(join(dir, prefix))) return [];
  return readdirSync(join(dir, prefix), { withFileTypes: true }).flatMap((e) => {
    const rel = prefix ? `${prefix}/${e.name}` : e.name;
    if (e.isDirectory() && e.name !== 'build' && e.name !== 'source') return findModules(dir, rel);
    return e.isFile() && /^nvidia.*\.ko(\.(xz|zst|gz))?$/.test(e.name) ? [rel] : [];
  });
}

/** License tells the trees apart: the open modules are Dual MIT/GPL, the proprietary ones NVIDIA's. */
const LICENSE: Record<'open' | 'proprietary', RegExp> = { open: /^Dual MIT\/GPL$/, proprietary: /^NVIDIA$/ };

/** What was built is what was asked for: vermagic of the kernel, the driver version, the module type. */
export async function checkBuiltModule(ctx: StepContext, ko: string, want: { release: string; version: string; moduleType: 'open' | 'proprietary'; source: string }): Promise<void> {
  const field = async (f: string) => (await runLogged(ctx.log, 'modinfo', ['-F', f, ko], { capture: true, signal: ctx.signal })).trim();
  const vermagic = await field('vermagic');
  if (vermagic.split(' ')[0] !== want.release) throw new GuestError('E_DRIVER_INSTALL', `nvidia.ko from ${want.source} has vermagic '${vermagic}', not kernel ${want.release}`);
  const version = await field('version');
  if (version !== want.version) throw new GuestError('E_VERSION_MISMATCH', `nvidia.ko from ${want.source} is version ${version}, but driver.version says ${want.version}`);
  const license = await field('license');
  if (!LICENSE[want.moduleType].test(license)) {
    throw new GuestError('E_DRIVER_SOURCE', `nvidia.ko from ${want.source} is licensed '${license}': not the ${want.moduleType} modules driver.moduleType asks for (check the tree and driver.moduleType)`);
  }
}

/** NVIDIA's prebuilt cores carry debug info (nvidia.ko 173 MB → 11 MB): the guest needs none of it. */
export async function stripModules(ctx: StepContext, modulesDir: string, modules: string[]): Promise<void> {
  const bytes = () => modules.reduce((sum, m) => sum + statSync(join(modulesDir, m)).size, 0);
  const before = bytes();
  for (const m of modules) await runLogged(ctx.log, 'strip', ['--strip-debug', join(modulesDir, m)], { signal: ctx.signal });
  ctx.log.info(`stripped debug info from the NVIDIA modules: ${before} → ${bytes()} bytes`);
}

/** kernel.moduleSigning as a driver task gets it: the hash and what modinfo must show as signer. */
export type ModuleSigningParams = { hash: string; signer: string };

/**
 * Signs stripped modules (stripping drops an appended signature) with the pipeline's key, using the
 * kernel build's own sign-file on the host: the private key never enters the chroot. Then checks
 * that modinfo reads the certificate's signer from each one.
 */
export async function signModules(ctx: StepContext, signing: ModuleSigningParams | undefined, build: UpstreamOutput<KernelBuildResult> | undefined, modulesDir: string, modules: string[]): Promise<void> {
  if (!signing) return;
  const signFile = build ? join(build.dir, 'build/scripts/sign-file') : '';
  if (!build || !existsSync(signFile)) {
    throw new GuestError('E_MODULE_SIGNING', `kernel.moduleSigning is set, but the kernel build has no scripts/sign-file (was it built with CONFIG_MODULE_SIG?): build the kernel again with the same pipeline`);
  }
  const key = ctx.files.signingKey as string;
  const certificate = ctx.files.signingCertificate as string;
  for (const m of modules) {
    const file = join(modulesDir, m);
    await runLogged(ctx.log, signFile, [signing.hash, key, certificate, file], { signal: ctx.signal });
    const signer = (await runLogged(ctx.log, 'modinfo', ['-F', 'signer', file], { capture: true, signal: ctx.signal })).trim();
    if (signer !== signing.signer) throw new GuestError('E_MODULE_SIGNING', `${m} signed with kernel.moduleSigning.key shows signer '${signer}', not '${signing.signer}' (the certificate's issuer CN)`);
  }
  ctx.log.info(`signed ${modules.length} NVIDIA modules (${signing.hash}, signer ${signing.signer})`);
}
