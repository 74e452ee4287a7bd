import { mkdirSync } from 'node:fs';
import { cpus } from 'node:os';
import { join } from 'node:path';
import { which } from 'zx';
import { runLogged, type RunOptions } from './exec.js';
import type { StepLog } from '../model/step.js';

/**
 * The environment of every kernel make: build metadata from the pipeline's source date instead of
 * the clock, user and host fixed, and LOCALVERSION set (empty) so setlocalversion never appends "+".
 */
export function kbuildEnv(sourceDate: number, extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  return {
    ...process.env,
    LC_ALL: 'C',
    TZ: 'UTC',
    SOURCE_DATE_EPOCH: String(sourceDate),
    KBUILD_BUILD_TIMESTAMP: new Date(sourceDate * 1000).toUTCString(),
    KBUILD_BUILD_USER: 'gpu-guest',
    KBUILD_BUILD_HOST: 'gpu-guest',
    KBUILD_BUILD_VERSION: '1',
    LOCALVERSION: '',
    ...extra,
  };
}

/** `make -C <tree> O=<objtree> ARCH=x86_64 …`: always out of tree, so the source entry stays untouched. */
export function makeArgs(tree: string, objtree: string, ...targets: string[]): string[] {
  return ['-C', tree, `O=${objtree}`, 'ARCH=x86_64', ...targets];
}

export function jobs(): number {
  return Math.max(1, cpus().length);
}

/** `CC=ccache gcc` when the host has ccache: a hit gives the same object, so the output is unchanged. */
export async function ccacheArgs(): Promise<string[]> {
  return (await which('ccache', { nothrow: true })) ? ['CC=ccache gcc', 'HOSTCC=ccache gcc'] : [];
}

/** Lines worth showing when a kernel build fails: compiler and make errors, not the whole log. */
export function compilerErrors(tail: string[]): string[] {
  const picked = tail.filter((l) => /(\berror\b|Error \d+|undefined reference|\*\*\*|fatal:|No rule to make target)/.test(l));
  return [...new Set(picked)].slice(-15);
}

/**
 * Where a kernel object tree is built and later packaged. kbuild records absolute object-tree
 * paths (objtool's own build), so packaging a copy at another path recompiles everything. Each
 * make therefore runs in a private mount namespace with its folder bind-mounted at this one path
 * per kernel-build key: the same path for the build and for the packaging, and nothing left
 * mounted on the host whatever happens to the process.
 */
export function stableBuildPath(cacheDir: string, buildKey: string): string {
  return join(cacheDir, 'kbuild', buildKey.slice(0, 16));
}

/** Runs `make …` with `folder` visible at `stable` (see stableBuildPath); compiler errors explain a failure. */
export function makeAtStablePath(log: StepLog, folder: string, stable: string, makeArgv: string[], opts: RunOptions & { readOnly?: boolean } = {}): Promise<string> {
  mkdirSync(stable, { recursive: true });
  // readOnly: a cached kernel tree that an out-of-tree module build reads must stay as it is
  const mount = opts.readOnly ? 'mount --bind "$1" "$2" && mount -o remount,bind,ro "$2"' : 'mount --bind "$1" "$2"';
  const script = `${mount} && shift 2 && exec make "$@"`;
  return runLogged(log, 'unshare', ['--mount', '--propagation', 'private', '--', 'sh', '-c', script, 'sh', folder, stable, ...makeArgv], { explain: compilerErrors, ...opts });
}
