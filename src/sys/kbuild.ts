import { mkdirSync } from 'node:fs';
import { cpus } from 'node:os';
import { join } from 'node:path';
import { findOnPath } from './which.js';
import { runLogged, type RunOptions } from './exec.js';
import { GuestError } from '../model/errors.js';
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

/** 1: kernel and module builds compile with ccache (see ccache()). */
export const CCACHE_ENV = 'GPU_GUEST_CCACHE';
/** 0: a kernel build never starts from an earlier kernel's object tree (steps/kernel/object-tree.ts). */
export const KERNEL_SEED_ENV = 'GPU_GUEST_KERNEL_SEED';

/**
 * The environment switches of kernel builds, checked before a build starts: GPU_GUEST_CCACHE (1:
 * compile with ccache) and GPU_GUEST_KERNEL_SEED (0: never start from an earlier kernel's object
 * tree). Anything but 0 or 1 is refused rather than read as off or on.
 */
export function checkKernelSwitches(env: NodeJS.ProcessEnv): void {
  for (const name of [CCACHE_ENV, KERNEL_SEED_ENV]) {
    const value = env[name];
    if (value !== undefined && value !== '' && value !== '0' && value !== '1') throw new GuestError('E_USAGE', `${name}=${value}: expected 0 or 1 (or unset it)`);
  }
}

/** The compiler command kernel builds use when the host has ccache. */
const CCACHE_CC = 'ccache gcc';

/**
 * The compiler for kernel and module builds. Plain gcc unless GPU_GUEST_CCACHE=1 asks for ccache
 * (`CC=ccache gcc`, its store in <cache>/ccache, shared by every key): a new kernel key builds in a
 * fresh object tree, and ccache's preprocessor mode then reuses every object whose preprocessed
 * source is unchanged after a fragment edit; but on a miss ccache preprocesses each file twice, so a
 * cold build is slower — opt in where kernels are rebuilt with changed configurations often.
 * `builtWith` is what kernel-build recorded: every later make on that tree (packaging, NVIDIA's
 * modules) must use the same compiler command, because kbuild compares each object's recorded
 * command line and would otherwise compile the whole kernel again.
 */
export async function ccache(cacheDir: string, builtWith?: string): Promise<{ args: string[]; env: NodeJS.ProcessEnv; compiler: string }> {
  const wanted = builtWith === undefined ? process.env[CCACHE_ENV] === '1' : builtWith === CCACHE_CC;
  if (!wanted) return { args: [], env: {}, compiler: builtWith ?? 'gcc' };
  if (!(await findOnPath('ccache'))) {
    if (builtWith === CCACHE_CC) throw new GuestError('E_MISSING_TOOL', `this kernel was built with CC="${CCACHE_CC}", and kbuild recompiles everything for another compiler: install ccache (apt-get install ccache) to package it or build modules against it`);
    throw new GuestError('E_MISSING_TOOL', 'GPU_GUEST_CCACHE=1 asks for ccache, which is not installed: apt-get install ccache, or unset GPU_GUEST_CCACHE');
  }
  // NOHASHDIR: the working folder is not part of what is hashed (it is the same path anyway)
  return { args: [`CC=${CCACHE_CC}`, `HOSTCC=${CCACHE_CC}`], env: { CCACHE_DIR: process.env.CCACHE_DIR ?? join(cacheDir, 'ccache'), CCACHE_NOHASHDIR: '1' }, compiler: CCACHE_CC };
}

/** Lines worth showing when a kernel build fails: compiler and make errors, not the whole log. */
export function compilerErrors(tail: string[]): string[] {
  const picked = tail.filter((l) => /(\berror\b|Error \d+|undefined reference|\*\*\*|fatal:|No rule to make target)/.test(l));
  return [...new Set(picked)].slice(-15);
}

/** Where every kernel make sees its trees (see kernelTreePaths); empty mount points on the host. */
export const KBUILD_ROOT = '/var/tmp/gpu-guest/kbuild';

/**
 * The paths a kernel build and everything that later reads or packages its object tree see.
 * kbuild records absolute paths of both trees (the `source` link, the generated Makefile, every
 * .cmd file's command line), so packaging a copy at another path, or a cache that was moved or
 * restored elsewhere, would recompile everything or read a source that is gone. Each make therefore
 * runs in a private mount namespace with the kernel source bind-mounted read-only at `source` and
 * the folder holding the object tree at `folder` (the tree is `objtree`): the same paths for every
 * build, never depending on where the cache is (so ccache and reproducibility see one path too), and
 * nothing left mounted on the host whatever happens to the process. Namespaces are private, so
 * builds running at the same time do not meet there.
 */
export function kernelTreePaths(): { source: string; folder: string; objtree: string } {
  return { source: join(KBUILD_ROOT, 'src'), folder: join(KBUILD_ROOT, 'out'), objtree: join(KBUILD_ROOT, 'out', 'build') };
}

/**
 * Runs `make …` with `trees.folder` (which holds `build/`) and `trees.source` at their stable paths
 * (kernelTreePaths); compiler errors explain a failure. `readOnly` keeps the object tree as it is
 * too (an out-of-tree module build reads a cached kernel tree); the source is always read-only.
 * make runs in its own mount and PID namespaces: nothing of it outlives gpu-guest.
 */
export function makeAtStablePath(log: StepLog, trees: { folder: string; source: string }, makeArgv: string[], opts: RunOptions & { readOnly?: boolean } = {}): Promise<string> {
  const at = kernelTreePaths();
  mkdirSync(at.folder, { recursive: true });
  mkdirSync(at.source, { recursive: true });
  const folderRo = opts.readOnly ? ' && mount -o remount,bind,ro "$4"' : '';
  const script = `mount --bind "$1" "$4"${folderRo} && mount --bind "$2" "$3" && mount -o remount,bind,ro "$3" && shift 4 && exec make "$@"`;
  // a PID namespace of its own, whose first process dies with gpu-guest (setpriv's parent-death
  // signal on unshare, --kill-child on its child): even when gpu-guest is killed outright (SIGKILL,
  // a CI runner cancelling the job), the kernel kills make and every compiler it started
  const argv = ['--pdeathsig', 'KILL', '--', 'unshare', '--mount', '--propagation', 'private', '--pid', '--fork', '--kill-child=SIGKILL', '--', 'sh', '-c', script, 'sh', trees.folder, trees.source, at.source, at.folder, ...makeArgv];
  return runLogged(log, 'setpriv', argv, { explain: compilerErrors, ...opts });
}
