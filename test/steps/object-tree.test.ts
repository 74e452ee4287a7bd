import { existsSync, mkdirSync, readdirSync, statSync, utimesSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { copyObjectTree, nearestObjectTree, pruneConfigStamps } from '../../src/steps/kernel/object-tree.js';
import { KERNEL_SEED_ENV } from '../../src/sys/kbuild.js';
import { parseDotConfig } from '../../src/sys/kconfig/options.js';
import { TaskLog } from '../../src/sys/task-log.js';
import type { EarlierEntry } from '../../src/model/step.js';
import { testDir } from '../helpers.js';

const TARBALL = 'a'.repeat(64);

/** A kernel-build entry as the cache holds it: its .config in out/build, its source by key. */
function buildEntry(dir: string, key: string, config: string, over: { source?: string; compiler?: string; stepVersion?: number } = {}): EarlierEntry {
  const outDir = join(dir, key, 'out');
  mkdirSync(join(outDir, 'build'), { recursive: true });
  writeFileSync(join(outDir, 'build', '.config'), config);
  return {
    key,
    outDir,
    material: { kind: 'kernel-build', stepVersion: over.stepVersion ?? 4, params: {}, inputs: {}, upstream: { source: { task: 'kernel-source', by: 'key', digest: over.source ?? 'src1' }, config: { task: 'kernel-config', by: 'output', digest: 'x' } } },
    result: { compiler: over.compiler ?? 'gcc' },
  };
}

const sources: EarlierEntry[] = [
  { key: 'src1', outDir: '/nonexistent', material: { kind: 'kernel-source', stepVersion: 1, params: {}, inputs: {}, upstream: {} }, result: { sha256: TARBALL } },
  { key: 'src2', outDir: '/nonexistent', material: { kind: 'kernel-source', stepVersion: 1, params: {}, inputs: {}, upstream: {} }, result: { sha256: 'b'.repeat(64) } },
];

function context(key: string, builds: EarlierEntry[]) {
  return { key, earlier: async (kind: string) => (kind === 'kernel-source' ? sources : kind === 'kernel-build' ? builds : []) };
}

const want = (config: string, compiler = 'gcc') => ({ sourceSha256: TARBALL, compiler, config: parseDotConfig(config), stepVersion: 4 });

afterEach(() => {
  delete process.env[KERNEL_SEED_ENV];
});

describe('incremental kernel builds: the object tree a new build starts from', () => {
  it('is the earlier build whose .config differs in the fewest symbols, from the same tarball, compiler and step version', async () => {
    const dir = testDir();
    const config = 'CONFIG_A=y\nCONFIG_B=m\n# CONFIG_C is not set\nCONFIG_S="x"\n';
    const builds = [
      buildEntry(dir, 'far', 'CONFIG_A=y\nCONFIG_B=y\nCONFIG_C=y\nCONFIG_S="x"\n'),
      buildEntry(dir, 'near', 'CONFIG_A=y\nCONFIG_B=m\nCONFIG_S="y"\n'),
      // nearer, but each unusable: another tarball, another compiler, another step version, itself
      buildEntry(dir, 'other-tarball', config, { source: 'src2' }),
      buildEntry(dir, 'unknown-source', config, { source: 'gone' }),
      buildEntry(dir, 'ccache', config, { compiler: 'ccache gcc' }),
      buildEntry(dir, 'old-step', config, { stepVersion: 3 }),
      buildEntry(dir, 'self', config),
    ];
    const seed = await nearestObjectTree(context('self', builds), want(config));
    expect(seed).toEqual({ key: 'near', tree: join(dir, 'near', 'out', 'build'), differing: 1 });
    // the same compiler command is required: ccache's entry is the one for a ccache build
    expect((await nearestObjectTree(context('self', builds), want(config, 'ccache gcc')))?.key).toBe('ccache');
  });

  it('is none without a usable earlier build, and none when GPU_GUEST_KERNEL_SEED=0 asks for a build from scratch', async () => {
    const dir = testDir();
    const builds = [buildEntry(dir, 'near', 'CONFIG_A=y\n')];
    expect(await nearestObjectTree(context('k', []), want('CONFIG_A=y\n'))).toBeUndefined();
    process.env[KERNEL_SEED_ENV] = '0';
    expect(await nearestObjectTree(context('k', builds), want('CONFIG_A=y\n'))).toBeUndefined();
  });

  it("copies the seed's tree with its times, without scripts/ (kbuild's host programs are made afresh)", async () => {
    const dir = testDir();
    const seed = join(dir, 'seed', 'build');
    mkdirSync(join(seed, 'kernel'), { recursive: true });
    mkdirSync(join(seed, 'scripts', 'mod'), { recursive: true });
    writeFileSync(join(seed, 'kernel', 'fork.o'), 'object');
    writeFileSync(join(seed, 'scripts', 'sign-file'), 'program');
    writeFileSync(join(seed, 'scripts', 'mod', 'modpost'), 'program');
    utimesSync(join(seed, 'kernel', 'fork.o'), 1_600_000_000, 1_600_000_000);
    const build = join(dir, 'out', 'build');
    mkdirSync(join(dir, 'out'));
    const ok = await copyObjectTree({ log: new TaskLog(join(dir, 'task.log')), signal: new AbortController().signal }, { key: 'k', tree: seed, differing: 1 }, build);
    expect(ok).toBe(true);
    expect(statSync(join(build, 'kernel', 'fork.o')).mtimeMs).toBe(1_600_000_000_000);
    expect(existsSync(join(build, 'scripts'))).toBe(false);
    expect(existsSync(join(seed, 'scripts', 'sign-file'))).toBe(true);
  });

  it('a copy that fails leaves nothing behind, and the build compiles from scratch', async () => {
    const dir = testDir();
    const log = new TaskLog(join(dir, 'task.log'));
    const build = join(dir, 'out', 'build');
    mkdirSync(join(dir, 'out'));
    const ok = await copyObjectTree({ log, signal: new AbortController().signal }, { key: 'f'.repeat(64), tree: join(dir, 'pruned-meanwhile'), differing: 3 }, build);
    expect(ok).toBe(false);
    expect(existsSync(build)).toBe(false);
    expect(log.tail(5).join('\n')).toMatch(/could not copy the object tree of ffffffffffff: compiling from scratch/);
  });

  it("leaves include/config/ as a build from scratch does: a stamp for each symbol auto.conf sets, kbuild's own files kept", () => {
    const build = join(testDir(), 'build');
    const dir = join(build, 'include', 'config');
    mkdirSync(dir, { recursive: true });
    writeFileSync(join(dir, 'auto.conf'), '#\nCONFIG_A=y\nCONFIG_S=""\nCONFIG_N=4\n');
    for (const f of ['auto.conf.cmd', 'kernel.release', 'A', 'S', 'N', 'GONE', 'WAS_ON']) writeFileSync(join(dir, f), '');
    pruneConfigStamps(build);
    expect(readdirSync(dir).sort()).toEqual(['A', 'N', 'S', 'auto.conf', 'auto.conf.cmd', 'kernel.release']);
  });
});
