import { copyFileSync, readFileSync, writeFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import { GuestError } from '../../model/errors.js';
import type { KernelConfigResult, KernelSourceResult } from '../../model/results.js';
import { runLogged } from '../../sys/exec.js';
import { requireHostTools } from '../../sys/host-tools.js';
import { kbuildEnv, makeArgs } from '../../sys/kbuild.js';
import { expandFragments, kataAllowList, mergeableFragment, readFragment } from '../../sys/kconfig/fragments.js';
import { formatRequested, parseDotConfig, type RequestedOption } from '../../sys/kconfig/options.js';
import { indexKconfig } from '../../sys/kconfig/tree.js';
import { assertConfigVerdict, assertKernelNeeds, verifyConfig, type KernelNeed } from '../../sys/kconfig/verify.js';
import { signingFragment } from '../../sys/module-signing.js';
import type { StepContext, StepDefinition } from '../../model/step.js';

/**
 * kernel-config: merges the base config and the fragments with the kernel's merge_config.sh, runs
 * `make olddefconfig`, then checks every requested option against the final .config itself, and
 * that the final .config has what the pipeline's driver needs (before anything is compiled).
 */
type ConfigParams = { localVersion: string; startFrom: string; allowDropped: string[]; moduleSigning?: { hash: string; enforce: boolean; keyType: 'rsa' | 'ecdsa' }; driverNeeds?: KernelNeed[] };

export const kernelConfig: StepDefinition<ConfigParams, { source: KernelSourceResult }, KernelConfigResult> = {
  kind: 'kernel-config',
  version: 1,
  resources: { cpu: 1 },
  publish: 'kernel-config',
  // every fragment present and well-formed before the kernel source is even fetched
  preflight: async (p, files) => {
    const requested = [...(p.startFrom === 'base' ? [] : [files.baseConfig as string]), ...expandFragments(files.fragments as string[])].flatMap(readFragment);
    checkLocalVersion(requested, p.localVersion);
  },
  run: (ctx) => mergeAndVerify(ctx),
};

async function mergeAndVerify(ctx: StepContext<ConfigParams, { source: KernelSourceResult }>): Promise<KernelConfigResult> {
  await requireHostTools('kernel-config');
  const tree = join(ctx.upstream.source.dir, 'tree');
  const { localVersion, startFrom, allowDropped } = ctx.params;
  const base = ctx.files.baseConfig as string;
  const fragments = expandFragments(ctx.files.fragments as string[]);
  const requested: RequestedOption[] = [];
  for (const f of [...(startFrom === 'base' ? [] : [base]), ...fragments]) requested.push(...readFragment(f));
  checkLocalVersion(requested, localVersion);
  const generated = join(ctx.workDir, 'gpu-guest-localversion.conf');
  writeFileSync(generated, `CONFIG_LOCALVERSION="${localVersion}"\n# CONFIG_LOCALVERSION_AUTO is not set\n`);
  requested.push(...readFragment(generated));
  const generatedFragments = [generated];
  if (ctx.params.moduleSigning) {
    // kernel.moduleSigning: checked like any fragment, so a kernel that cannot sign is an error
    const signing = join(ctx.workDir, 'gpu-guest-module-signing.conf');
    writeFileSync(signing, signingFragment(ctx.params.moduleSigning));
    requested.push(...readFragment(signing));
    generatedFragments.push(signing);
  }

  const objtree = join(ctx.workDir, 'build');
  const env = kbuildEnv(ctx.sourceDate);
  const run = (cmd: string, args: string[]) => runLogged(ctx.log, cmd, args, { env, signal: ctx.signal, cwd: ctx.workDir });
  if (startFrom === 'base') {
    await run('mkdir', ['-p', objtree]);
    copyFileSync(base, join(objtree, '.config'));
  } else {
    await run('make', makeArgs(tree, objtree, startFrom));
  }
  // -m: merge only; olddefconfig below resolves the result against Kconfig
  const merged = [...(startFrom === 'base' ? [] : [base]), ...fragments.map((f, i) => mergeableFragment(f, ctx.workDir, i)), ...generatedFragments];
  await run('sh', [join(tree, 'scripts/kconfig/merge_config.sh'), '-m', '-O', objtree, join(objtree, '.config'), ...merged]);
  await run('make', makeArgs(tree, objtree, 'olddefconfig'));

  const finalText = readFileSync(join(objtree, '.config'), 'utf8');
  const kataAllowed = kataAllowList(ctx.files.fragments as string[]);
  const index = indexKconfig(tree);
  const final = parseDotConfig(finalText);
  const verdict = verifyConfig(requested, final, index, [...allowDropped, ...kataAllowed]);
  for (const line of verdict.allowed) ctx.log.info(`allowed to drop (kernel.allowDropped${kataAllowed.length ? ' or the Kata tree\'s whitelist.conf' : ''}): ${line}`);
  assertConfigVerdict(verdict);
  assertKernelNeeds(ctx.params.driverNeeds ?? [], final, requested, index);
  writeFileSync(join(ctx.outDir, 'config'), finalText);
  writeFileSync(join(ctx.outDir, 'requested.conf'), formatRequested(requested));
  const enabled = [...final.values()].filter((v) => v !== null).length;
  ctx.log.info(`verified ${requested.length} requested options; ${enabled} options set in the final .config`);
  return { fragments: fragments.map((f) => basename(f)), requested: requested.length, enabled, allowedDrops: verdict.allowed };
}

/** CONFIG_LOCALVERSION in a fragment must agree with the pipeline's kernel.localVersion. */
function checkLocalVersion(requested: RequestedOption[], localVersion: string): void {
  for (const r of requested) {
    if (r.symbol === 'LOCALVERSION' && r.value !== `"${localVersion}"`) {
      throw new GuestError('E_FRAGMENT_CONFLICT', `${basename(r.file)}:${r.line}: CONFIG_LOCALVERSION=${r.value} disagrees with kernel.localVersion ${localVersion} (make them the same)`);
    }
  }
}
