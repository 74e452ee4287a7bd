import { spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { cliBin, execGraph, harness, repoRoot, run, testDir } from '../helpers.js';

describe('gpu-guest CLI', () => {
  it('lists every flag with its default in --help', async () => {
    const r = await run(cliBin, ['build', '--help']);
    expect(r.code).toBe(0);
    for (const flag of ['--vendor', '--pipeline', '--set', '--fragment', '--cache-dir', '--out-dir', '--force', '--until', '--only', '--jobs', '--keep-going', '--progress', '--json']) {
      expect(r.stdout).toContain(flag);
    }
    expect(r.stdout).toMatch(/--out-dir <dir> .*\n?.*\(default: "out"\)/);
  });

  const usage: [string, string[], RegExp][] = [
    ['an unknown vendor', ['plan', '--vendor', 'amd'], /^error: E_UNKNOWN_VENDOR: unknown vendor 'amd' \(pipelines available: intel, nvidia/],
    ['a missing pipeline file', ['plan', '--pipeline', '/nope.yaml'], /^error: E_PIPELINE_NOT_FOUND: pipeline file \/nope.yaml does not exist/],
    ['a bad --set path', ['plan', '--vendor', 'intel', '--set', 'kernal.version=6.1'], /^error: E_SET_PATH: --set kernal\.version=6\.1: no key 'kernal' at the top level/],
    ['an unknown task in --until', ['plan', '--vendor', 'intel', '--until', 'kernel'], /^error: E_UNKNOWN_TASK: --until kernel: no such task in intel \(tasks: kernel-source, kernel-config/],
    ['an unknown option', ['build', '--vendr', 'intel'], /unknown option '--vendr'/],
    ['a bad --jobs', ['build', '--vendor', 'intel', '--jobs', '0'], /E_USAGE: --jobs 0: expected a whole number of 1 or more/],
  ];
  it.each(usage)('exits 2 with one clean line for %s', async (_, args, message) => {
    const dir = testDir();
    const r = await run(cliBin, [...args, '--cache-dir', join(dir, 'cache')]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(message);
    expect(r.stderr).not.toMatch(/\n\s+at /);
  });

  it('exits 2 naming an unwritable cache folder', async () => {
    const dir = testDir();
    writeFileSync(join(dir, 'file'), '');
    const r = await run(cliBin, ['plan', '--vendor', 'intel', '--cache-dir', join(dir, 'file/cache')]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/^error: E_CACHE_UNWRITABLE: cache folder .*file\/cache is not writable \(ENOTDIR\): pass --cache-dir DIR/);
  });

  it('plan --json prints the plan as data; --dot prints Graphviz', async () => {
    const dir = testDir();
    const args = execGraph(dir, [{ id: 'a', script: 'true' }, { id: 'b', deps: ['a'], script: 'true' }]);
    const json = await run(harness, ['plan', '--json', ...args]);
    const plan = JSON.parse(json.stdout);
    expect(plan.tasks.map((t: { id: string; status: string; key: string }) => [t.id, t.status, t.key.length])).toEqual([['a', 'run', 64], ['b', 'run', 64]]);
    const dot = await run(harness, ['plan', '--dot', ...args]);
    expect(dot.stdout).toContain('"a" -> "b";');
  });

  it('prints JSON events with --json, one object per line', async () => {
    const dir = testDir();
    const r = await run(harness, ['build', '--json', ...execGraph(dir, [{ id: 'a', script: 'echo hi' }])]);
    expect(r.code).toBe(0);
    const events = r.stdout.trim().split('\n').map((l) => JSON.parse(l));
    expect(events.map((e: { type: string }) => e.type)).toEqual(['run:start', 'task:start', 'task:end', 'run:end']);
  });

  it('draws a listr2 tree and a summary on a terminal', () => {
    const dir = testDir();
    const args = execGraph(dir, [{ id: 'alpha', script: 'sleep 0.3' }, { id: 'beta', deps: ['alpha'], script: 'true' }]);
    const cmd = [process.execPath, harness, 'build', ...args].map((a) => `'${a}'`).join(' ');
    const r = spawnSync('script', ['-qec', `stty cols 120 rows 40; ${cmd}`, '/dev/null'], { env: { ...process.env, CI: '', TERM: 'xterm' }, encoding: 'utf8' });
    const screen = r.stdout.replace(/\x1b\[[0-9;?]*[A-Za-z]/g, '');
    expect(r.status, screen).toBe(0);
    expect(screen).toMatch(/✔ alpha {2}run alpha \(\d/);
    expect(screen).toMatch(/summary:\r?\n {2}alpha +succeeded/);
  });

  it('doctor names the apt package of a missing tool', async () => {
    const r = await run(cliBin, ['doctor', '--json'], { env: { PATH: '/nonexistent' } });
    const report = JSON.parse(r.stdout);
    expect(r.code).toBe(1);
    expect(report.fix).toMatch(/^apt-get install -y .*\bmake\b/);
    expect(report.tools.find((t: { name: string }) => t.name === 'gcc')).toMatchObject({ present: false, aptPackage: 'gcc' });
  });

  it('clean removes the pipeline out folder and, with --cache, the cache entries', async () => {
    const dir = testDir();
    const args = execGraph(dir, [{ id: 'a', script: 'echo x > x' }]);
    expect((await run(harness, ['build', ...args])).code).toBe(0);
    const r = await run(harness, ['clean', '--cache', ...args]);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain(`removed ${join(dir, 'out/demo')}`);
    expect(r.stdout).toContain(`removed ${join(dir, 'cache/entries')}`);
    expect((await run(harness, ['plan', ...args])).stdout).toMatch(/run +a/);
  });

  it('clean removes only what gpu-guest made: never the current folder, a folder without its marker, or a non-cache', async () => {
    const dir = testDir();
    const precious = join(dir, 'precious.txt');
    writeFileSync(precious, 'keep me');
    const here = spawnSync(process.execPath, [cliBin, 'clean', '--out-dir', '.'], { cwd: dir, encoding: 'utf8' });
    expect(here.status).toBe(2);
    expect(here.stderr).toMatch(/^error: E_CLEAN_REFUSED: refusing to remove .*: it holds the current folder/);
    const foreign = await run(cliBin, ['clean', '--out-dir', dir]);
    expect(foreign.code).toBe(2);
    expect(foreign.stderr).toMatch(/E_CLEAN_REFUSED: refusing to remove .*: gpu-guest did not make it \(no \.gpu-guest-out marker\)/);
    const notCache = await run(cliBin, ['clean', '--cache', '--cache-dir', dir, '--out-dir', join(dir, 'no-out')]);
    expect(notCache.code).toBe(2);
    expect(notCache.stderr).toMatch(/E_CLEAN_REFUSED: refusing to empty .*: it is not a gpu-guest cache \(no CACHEDIR\.TAG/);
    expect(readFileSync(precious, 'utf8')).toBe('keep me');
  });

  it('is a working binary from the checkout', () => {
    expect(spawnSync(process.execPath, [cliBin, '--version'], { cwd: repoRoot, encoding: 'utf8' }).stdout.trim()).toMatch(/^\d+\.\d+\.\d+$/);
  });
});
