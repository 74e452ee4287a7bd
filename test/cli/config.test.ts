import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { gzipSync } from 'node:zlib';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { DEBIAN_TARBALL } from '../fixtures/kernel-org.js';
import { cliBin, repoRoot, run, sharedCacheDir, testDir, writePipeline } from '../helpers.js';

describe('gpu-guest config diff on files', () => {
  const a = '# made by hand\nCONFIG_A=y\nCONFIG_B=y\n# CONFIG_C is not set\nCONFIG_D=m\nCONFIG_N=64\n';
  const b = 'CONFIG_A=y\n# CONFIG_B is not set\nCONFIG_C=y\nCONFIG_D=y\nCONFIG_N=240\nCONFIG_E=y\n';

  function files() {
    const dir = testDir();
    writeFileSync(join(dir, 'a.config'), a);
    writeFileSync(join(dir, 'b.config.gz'), gzipSync(b));
    mkdirSync(join(dir, 'frags'));
    writeFileSync(join(dir, 'frags', '10-x.conf'), 'CONFIG_A=y\nCONFIG_C=y\n');
    writeFileSync(join(dir, 'frags', '20-y.conf'), '# CONFIG_A is not set\nCONFIG_Z=y\n');
    return dir;
  }

  it('groups the options that differ as on, off and value; reads .gz; exit 0 unless --exit-code', async () => {
    const dir = files();
    const r = await run(cliBin, ['config', 'diff', join(dir, 'a.config'), join(dir, 'b.config.gz')]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/on in b, off in a \(2\):\n\s+CONFIG_C\s+a: not set\s+b: y\n\s+CONFIG_E\s+a: not set\s+b: y\n/);
    expect(r.stdout).toMatch(/off in b, on in a \(1\):\n\s+CONFIG_B\s+a: y\s+b: not set\n/);
    expect(r.stdout).toMatch(/values differ \(2\):\n\s+CONFIG_D\s+a: m\s+b: y\n\s+CONFIG_N\s+a: 64\s+b: 240\n/);
    expect(r.stdout).toContain('5 options differ: 2 on, 1 off, 2 value');
    expect(r.stdout).not.toContain('CONFIG_A ');
    const strict = await run(cliBin, ['config', 'diff', '--exit-code', join(dir, 'a.config'), join(dir, 'b.config.gz')]);
    expect(strict.code).toBe(1);
    const same = await run(cliBin, ['config', 'diff', '--exit-code', join(dir, 'a.config'), join(dir, 'a.config')]);
    expect([same.code, same.stdout.trim().split('\n').at(-1)]).toEqual([0, 'no option differs']);
  });

  it('against fragments compares only the options they name, the last request winning; --json', async () => {
    const dir = files();
    const r = await run(cliBin, ['config', 'diff', '--json', join(dir, 'a.config'), join(dir, 'frags')]);
    expect(r.code, r.stderr).toBe(0);
    const diff = JSON.parse(r.stdout) as { on: { symbol: string }[]; off: { symbol: string }[]; value: { symbol: string }[]; b: string };
    expect(diff.b).toContain('(fragments)');
    expect(diff.on.map((d) => d.symbol)).toEqual(['C', 'Z']);
    expect(diff.off.map((d) => d.symbol)).toEqual(['A']);
    expect(diff.value).toEqual([]);
  });

  it('refuses a side that is no file, folder or vendor, and a file without CONFIG_ lines (exit 2)', async () => {
    const dir = files();
    const none = await run(cliBin, ['config', 'diff', join(dir, 'a.config'), 'amd']);
    expect(none.code).toBe(2);
    expect(none.stderr).toMatch(/^error: E_USAGE: config diff: amd is no file, folder or vendor \(vendors: intel, nvidia, nvidia-vgpu\)/m);
    writeFileSync(join(dir, 'empty'), 'hello\n');
    const empty = await run(cliBin, ['config', 'diff', join(dir, 'a.config'), join(dir, 'empty')]);
    expect(empty.code).toBe(2);
    expect(empty.stderr).toMatch(/E_USAGE: config diff: .*empty holds no CONFIG_ line/);
  });
});

// The Debian tarball as a local source: its extracted tree is shared through the test cache.
const localSource = `  version: "6.1"\n  source:\n    tarball: ${DEBIAN_TARBALL}\n`;

describe('gpu-guest config diff and explain on built pipelines', () => {
  async function builtPipelines() {
    const dir = testDir();
    const minimal = writePipeline(dir, 'intel', localSource);
    const kata = join(dir, 'kata.yaml');
    writeFileSync(kata, readFileSync(minimal, 'utf8').replace('profile: minimal', 'profile: kata').replace('name: intel-test', 'name: intel-kata'));
    for (const file of [minimal, kata]) {
      const r = await run(cliBin, ['build', '--until', 'kernel-config', '--pipeline', file, '--cache-dir', sharedCacheDir(), '--out-dir', join(dir, 'out')]);
      expect(r.code, r.stderr).toBe(0);
    }
    return { dir, minimal, kata };
  }

  it('compares the minimal and kata profiles of one pipeline, and a built config with the kata fragments', async () => {
    const { minimal, kata } = await builtPipelines();
    const r = await run(cliBin, ['config', 'diff', '--json', minimal, kata, '--cache-dir', sharedCacheDir()]);
    expect(r.code, r.stderr).toBe(0);
    const diff = JSON.parse(r.stdout) as { a: string; b: string; on: { symbol: string }[]; value: { symbol: string; a: string; b: string }[] };
    expect(diff.a).toMatch(/^intel-test \(kernel-config [0-9a-f]{12}\)$/);
    expect(diff.on.map((d) => d.symbol)).toEqual(expect.arrayContaining(['VIRTIO_FS', 'OVERLAY_FS', 'SECCOMP_FILTER', 'MEMCG', 'USER_NS', 'NF_TABLES']));
    expect(diff.value).toContainEqual({ symbol: 'NR_CPUS', a: '64', b: '240' });
    // the minimal guest against what the kata fragments ask: every asked-for option it lacks, nothing else
    const gaps = await run(cliBin, ['config', 'diff', '--exit-code', minimal, join(repoRoot, 'kernel-configs/base/kata/x86_64'), '--cache-dir', sharedCacheDir()]);
    expect(gaps.code).toBe(1);
    expect(gaps.stdout).toMatch(/CONFIG_VIRTIO_FS\s+a: not set\s+b: y/);
    expect(gaps.stdout).not.toMatch(/CONFIG_VIRTIO_BLK\s/);
    const none = await run(cliBin, ['config', 'diff', '--exit-code', kata, join(repoRoot, 'kernel-configs/base/kata/x86_64'), '--cache-dir', sharedCacheDir()]);
    expect([none.code, none.stdout.trim().split('\n').at(-1)]).toEqual([0, 'no option differs']);
  }, 600_000);

  it('explains an option: the fragment line that asked, the options that select it, the unmet dependency', async () => {
    const { minimal, kata } = await builtPipelines();
    const explain = (file: string, option: string, ...more: string[]) => run(cliBin, ['config', 'explain', option, '--pipeline', file, '--cache-dir', sharedCacheDir(), ...more]);
    const asked = await explain(kata, 'CONFIG_VIRTIO_FS');
    expect(asked.code, asked.stderr).toBe(0);
    expect(asked.stdout).toMatch(/^CONFIG_VIRTIO_FS=y {2}\(intel-kata \(kernel-config [0-9a-f]{12}\), Linux 6\.1\.\d+\)\n {2}because: requested: CONFIG_VIRTIO_FS=y at 50-filesystems\.conf:\d+\n {2}defined: fs\/fuse\/Kconfig:\d+\n/);
    const selected = await explain(kata, 'VIRTIO');
    expect(selected.stdout).toMatch(/because: not requested; selected by .*VIRTIO_PCI \(select in drivers\/virtio\/Kconfig:\d+\)/);
    const unmet = await explain(minimal, 'CONFIG_VIRTIO_FS');
    expect(unmet.stdout).toMatch(/^# CONFIG_VIRTIO_FS is not set/);
    expect(unmet.stdout).toMatch(/because: not requested, and it could not be on anyway: unmet depends on FUSE_FS \(not set: FUSE_FS\) \[fs\/fuse\/Kconfig:\d+\]/);
    const json = await explain(minimal, 'CONFIG_DRM_I915', '--json');
    expect(JSON.parse(json.stdout)).toMatchObject({ symbol: 'DRM_I915', value: 'y', requested: { value: 'y', file: 'intel.conf' } });
    const unknown = await explain(kata, 'CONFIG_MEMCG_SWAP');
    expect(unknown.code).toBe(2);
    expect(unknown.stderr).toMatch(/^error: E_USAGE: config explain CONFIG_MEMCG_SWAP: Linux 6\.1\.\d+ defines no CONFIG_MEMCG_SWAP \(misspelled, renamed or removed\)/m);
  });

  it('says how to build a config that is not built yet (E_NOT_CACHED, exit 2)', async () => {
    const dir = testDir();
    const file = writePipeline(dir, 'intel', localSource);
    const r = await run(cliBin, ['config', 'explain', 'CONFIG_VIRTIO', '--pipeline', file, '--cache-dir', join(dir, 'empty-cache')]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/^error: E_NOT_CACHED: pipeline intel-test's kernel config is not built in .*empty-cache: run gpu-guest build --pipeline .* --until kernel-config/m);
  });
});
