import { existsSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { runLogged } from '../../sys/exec.js';
import { KERNEL_SEED_ENV } from '../../sys/kbuild.js';
import { parseDotConfig, type OptionValue } from '../../sys/kconfig/options.js';
import type { StepContext } from '../../model/step.js';

/**
 * Incremental kernel builds. A new kernel-build entry starts from a copy of the object tree of the
 * nearest earlier entry built from the same source tarball with the same compiler command, and kbuild
 * itself decides what to compile again: syncconfig writes the new auto.conf and touches
 * include/config/<SYMBOL> for every symbol whose value changed, and fixdep made each object depend
 * on exactly the symbols its sources test, so only those objects (and the links above them) are made
 * again. Every make sees the trees at the same paths (kernelTreePaths), so the copied `.cmd` files
 * stay valid. What a configuration alone decides to exist is made as a build from scratch makes it
 * (scripts/ rebuilt, include/config/ pruned), so the kernel, its modules and packages are the cold
 * build's, byte for byte (measured: README's kernel-build section). GPU_GUEST_KERNEL_SEED=0 turns it off.
 */

export interface Seed {
  key: string;
  /** The seed entry's object tree. */
  tree: string;
  /** Configuration symbols whose value differs between the seed's .config and this build's. */
  differing: number;
}

type SeedContext = Pick<StepContext, 'key' | 'earlier'>;

/**
 * The earlier kernel-build entry whose .config is nearest (fewest symbols differ), among those of the
 * same step version, source tarball (sha256) and compiler. Never this key's own entry: a forced
 * rebuild (`--force kernel-build`) does not reuse the tree it is replacing.
 */
export async function nearestObjectTree(ctx: SeedContext, want: { sourceSha256: string; compiler: string; config: Map<string, OptionValue>; stepVersion: number }): Promise<Seed | undefined> {
  if (process.env[KERNEL_SEED_ENV] === '0') return undefined;
  const tarballOf = new Map((await ctx.earlier('kernel-source')).map((e) => [e.key, e.result.sha256]));
  let best: Seed | undefined;
  for (const e of await ctx.earlier('kernel-build')) {
    const source = e.material.upstream.source;
    if (e.key === ctx.key || e.material.stepVersion !== want.stepVersion || source?.by !== 'key') continue;
    if (tarballOf.get(source.digest) !== want.sourceSha256 || (e.result.compiler ?? 'gcc') !== want.compiler) continue;
    const tree = join(e.outDir, 'build');
    let text: string;
    try {
      text = readFileSync(join(tree, '.config'), 'utf8');
    } catch {
      continue;
    }
    const differing = countDiffering(want.config, parseDotConfig(text));
    if (!best || differing < best.differing || (differing === best.differing && e.key < best.key)) best = { key: e.key, tree, differing };
  }
  return best;
}

function countDiffering(a: Map<string, OptionValue>, b: Map<string, OptionValue>): number {
  let n = 0;
  for (const symbol of new Set([...a.keys(), ...b.keys()])) if ((a.get(symbol) ?? null) !== (b.get(symbol) ?? null)) n++;
  return n;
}

/**
 * Copies the seed's object tree to `build` with its times (make compares them) and modes, without
 * scripts/: kbuild's host programs are made afresh, as in a build from scratch, because which of them
 * exist depends on the configuration (sign-file, asn1_compiler, kallsyms …) and kernel-debs'
 * linux-headers package carries the whole folder; a seed's program this configuration does not make
 * would otherwise be packaged. Remaking them costs seconds: the asn1 parsers they generate and the
 * modules' final link (scripts/module.lds) follow. False, with nothing left at `build`, when the
 * copy fails (the entry was pruned meanwhile, the disk is full): the build then starts from scratch.
 */
export async function copyObjectTree(ctx: Pick<StepContext, 'log' | 'signal'>, seed: Seed, build: string): Promise<boolean> {
  try {
    await runLogged(ctx.log, 'cp', ['-a', '--reflink=auto', '--', seed.tree, build], { signal: ctx.signal });
    rmSync(join(build, 'scripts'), { recursive: true, force: true });
    return true;
  } catch (err) {
    rmSync(build, { recursive: true, force: true });
    if (ctx.signal.aborted) throw err;
    ctx.log.info(`could not copy the object tree of ${seed.key.slice(0, 12)}: compiling from scratch`);
    return false;
  }
}

/**
 * include/config/ as a build from scratch leaves it: one empty stamp per symbol auto.conf sets.
 * syncconfig touches a stamp for every symbol whose value changed, so a tree that was configured
 * before keeps stamps of symbols it no longer sets, and kernel-debs' linux-headers package would
 * carry them. Nothing reads a stamp after the build (a later syncconfig touches again what changes).
 */
export function pruneConfigStamps(build: string): void {
  const dir = join(build, 'include', 'config');
  const autoConf = join(dir, 'auto.conf');
  if (!existsSync(autoConf)) return;
  const set = new Set(parseDotConfig(readFileSync(autoConf, 'utf8')).keys());
  for (const name of readdirSync(dir)) {
    if (/^[A-Za-z0-9_]+$/.test(name) && !set.has(name)) rmSync(join(dir, name));
  }
}
