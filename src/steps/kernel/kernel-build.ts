import { copyFileSync, existsSync, mkdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { GuestError } from '../../model/errors.js';
import type { KernelBuildResult, KernelConfigResult, KernelSourceResult } from '../../model/results.js';
import { requireHostTools } from '../../sys/host-tools.js';
import { ccache, jobs, kbuildEnv, kernelTreePaths, makeArgs, makeAtStablePath } from '../../sys/kbuild.js';
import { parseDotConfig } from '../../sys/kconfig/options.js';
import { SIGNING_PEM } from '../../sys/module-signing.js';
import { copyObjectTree, nearestObjectTree, pruneConfigStamps } from './object-tree.js';
import type { StepContext, StepDefinition } from '../../model/step.js';

/**
 * kernel-build: `make bzImage modules` out of tree with the verified .config, reproducible build
 * metadata, and the files named as Kata expects. The object tree stays in the entry (out/build) so
 * that kernel-debs packages it without compiling again, and a later kernel-build of another
 * configuration starts from a copy of it (object-tree.ts).
 */
type BuildParams = { localVersion: string; sourceDate: number };
type BuildInputs = { source: KernelSourceResult; config: KernelConfigResult };

const VERSION = 4;

export const kernelBuild: StepDefinition<BuildParams, BuildInputs, KernelBuildResult> = {
  kind: 'kernel-build',
  version: VERSION,
  resources: { cpu: 'all' },
  publish: 'kernel',
  undigested: ['build'],
  // early cutoff: keyed by the final .config, so a fragment edit that leaves it as it was compiles nothing
  cutoff: { config: { files: ['config'] } },
  run: (ctx) => buildKernel(ctx),
};

async function buildKernel(ctx: StepContext<BuildParams, BuildInputs>): Promise<KernelBuildResult> {
  await requireHostTools('kernel-build');
  const tree = join(ctx.upstream.source.dir, 'tree');
  const config = join(ctx.upstream.config.dir, 'config');
  const { localVersion } = ctx.params;
  const build = join(ctx.outDir, 'build');
  const configText = readFileSync(config, 'utf8');
  const options = parseDotConfig(configText);
  const cc = await ccache(ctx.cacheDir);
  const seed = await nearestObjectTree(ctx, { sourceSha256: ctx.upstream.source.result.sha256, compiler: cc.compiler, config: options, stepVersion: VERSION });
  if (seed && (await copyObjectTree(ctx, seed, build))) {
    ctx.log.info(`starting from the object tree of kernel-build ${seed.key.slice(0, 12)} (configuration symbols that differ: ${seed.differing}): kbuild compiles what they change`);
  } else {
    mkdirSync(build, { recursive: true });
  }
  // a new mtime: kbuild's syncconfig runs and touches the stamps of the symbols that changed
  writeFileSync(join(build, '.config'), configText);
  writeSigningKey(ctx);
  // make sees the trees at paths that kernel-debs and driver-modules will use again (see kernelTreePaths)
  const at = kernelTreePaths();
  const env = kbuildEnv(ctx.sourceDate, cc.env);
  const make = (args: string[], capture = false) => makeAtStablePath(ctx.log, { folder: ctx.outDir, source: tree }, args, { env, signal: ctx.signal, capture });
  const modules = options.get('MODULES') === 'y';
  const extra = cc.args;
  if (extra.length) ctx.log.info(`using ccache (${cc.env.CCACHE_DIR})`);
  const targets = ['bzImage', ...(modules ? ['modules'] : [])];
  await make([...makeArgs(at.source, at.objtree, `-j${jobs()}`, ...targets), ...extra]);
  pruneConfigStamps(build);
  const release = (await make(['-s', ...makeArgs(at.source, at.objtree, 'kernelrelease')], true)).trim();
  checkKernelRelease(release, localVersion);
  const flavour = localVersion.slice(1);
  const files: [string, string][] = [
    ['arch/x86/boot/bzImage', `vmlinuz-${release}`],
    ['vmlinux', `vmlinux-${release}`],
    ['.config', `config-${release}`],
    ['System.map', `System.map-${release}`],
  ];
  for (const [from, to] of files) copyFileSync(join(ctx.outDir, 'build', from), join(ctx.outDir, to));
  symlinkSync(`vmlinuz-${release}`, join(ctx.outDir, `vmlinuz-${flavour}.container`));
  symlinkSync(`vmlinux-${release}`, join(ctx.outDir, `vmlinux-${flavour}.container`));
  const sourceResult = ctx.upstream.source.result;
  ctx.log.info(`kernel release ${release}`);
  return { kernelRelease: release, buildKey: ctx.key, version: sourceResult.version ?? null, flavour, modules, image: `vmlinuz-${release}`, compiler: cc.compiler };
}

/**
 * kernel.moduleSigning: key and certificate as the one PEM that CONFIG_MODULE_SIG_KEY names, in the
 * object tree (kernel-debs signs at modules_install with it, driver-modules' modules_install too).
 * It stays in the cache entry, readable by root only; it never enters a package or the guest.
 */
function writeSigningKey(ctx: StepContext<BuildParams, BuildInputs>): void {
  const key = ctx.files.signingKey as string | undefined;
  const pem = join(ctx.outDir, 'build', SIGNING_PEM);
  // a tree copied from another build holds that build's key: never keep another pipeline's key
  if (!key) return rmSync(pem, { force: true });
  const text = `${readFileSync(key, 'utf8').trimEnd()}\n${readFileSync(ctx.files.signingCertificate as string, 'utf8').trimEnd()}\n`;
  // a copied tree's PEM keeps its time when it is the same key: the certificate is not made again
  if (existsSync(pem) && readFileSync(pem, 'utf8') === text) return;
  mkdirSync(dirname(pem), { recursive: true });
  writeFileSync(pem, text, { mode: 0o600 });
}

/** The release make reports must carry the pipeline's suffix: Kata's file names and the driver depend on it. */
export function checkKernelRelease(release: string, localVersion: string): void {
  if (!release || !release.endsWith(localVersion)) {
    throw new GuestError('E_KERNEL_RELEASE', `built kernel release '${release}' does not end in ${localVersion} (CONFIG_LOCALVERSION did not take effect: check the fragments and kernel.localVersion)`);
  }
}
