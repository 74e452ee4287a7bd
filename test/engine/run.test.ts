import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { execGraph, fileAppears, harness, run, start, testDir } from '../helpers.js';

const entries = (dir: string) => (existsSync(join(dir, 'cache/entries')) ? readdirSync(join(dir, 'cache/entries')) : []);

describe('engine with real processes', () => {
  it('runs every task once, then reuses all of them from the cache', async () => {
    const dir = testDir();
    const counter = join(dir, 'runs');
    const args = execGraph(dir, [
      { id: 'a', script: `echo a >> ${counter}; echo hello > a.txt` },
      { id: 'b', deps: ['a'], script: `echo b >> ${counter}; cat "$UP_a/a.txt" > b.txt; echo world >> b.txt` },
      { id: 'c', deps: ['a'], script: `echo c >> ${counter}; echo c > c.txt` },
    ]);
    const first = await run(harness, ['build', ...args]);
    expect(first.code, first.stderr).toBe(0);
    expect(readFileSync(counter, 'utf8').split('\n').filter(Boolean).sort()).toEqual(['a', 'b', 'c']);
    expect(entries(dir)).toHaveLength(3);
    expect(readFileSync(join(dir, 'out/demo/exec/b.txt'), 'utf8')).toBe('hello\nworld\n');
    expect(readFileSync(join(dir, 'out/demo/logs/b.log'), 'utf8')).toContain('$ sh -c');
    const meta = JSON.parse(readFileSync(join(dir, 'cache/entries', entries(dir)[0]!, 'meta.json'), 'utf8'));
    expect(Object.keys(meta)).toEqual(expect.arrayContaining(['key', 'material', 'durationMs', 'outputs']));
    expect(first.stdout).toMatch(/^\d\d:\d\d:\d\d start  a$/m);
    expect(first.stdout).toMatch(/summary:\n {2}a +succeeded/);

    const second = await run(harness, ['build', ...args]);
    expect(second.code, second.stderr).toBe(0);
    expect(readFileSync(counter, 'utf8').split('\n').filter(Boolean)).toHaveLength(3);
    expect(second.stdout).toMatch(/cached +a/);
    expect(second.stdout).toMatch(/0 to run/);
    const trace = JSON.parse(readFileSync(join(dir, 'out/demo/logs/trace.json'), 'utf8'));
    expect(trace.traceEvents.some((e: { name: string }) => e.name === 'run')).toBe(true);
  });

  it('reruns only the failed task after a failure, and prints its log tail and path', async () => {
    const dir = testDir();
    const marker = join(dir, 'fixed');
    const counter = join(dir, 'runs');
    const args = execGraph(dir, [
      { id: 'a', script: `echo a >> ${counter}` },
      { id: 'b', deps: ['a'], script: `echo b >> ${counter}; for i in $(seq 1 40); do echo line $i; done; test -f ${marker} || { echo 'cc1: error: something broke' >&2; exit 3; }` },
      { id: 'c', deps: ['b'], script: `echo c >> ${counter}` },
    ]);
    const failed = await run(harness, ['build', ...args]);
    expect(failed.code).toBe(1);
    expect(failed.stderr).toMatch(/^error: E_COMMAND_FAILED: sh -c .* exited with status 3/m);
    expect(failed.stderr).toContain('cc1: error: something broke');
    expect(failed.stderr).toContain(`full log: ${join(dir, 'out/demo/logs/b.log')}`);
    expect(failed.stderr).not.toContain('line 5\n');
    expect(failed.stdout).toMatch(/skipped c/);
    expect(entries(dir)).toHaveLength(1);

    writeFileSync(marker, '');
    const again = await run(harness, ['build', ...args]);
    expect(again.code, again.stderr).toBe(0);
    expect(readFileSync(counter, 'utf8').split('\n').filter(Boolean)).toEqual(['a', 'b', 'b', 'c']);
  });

  it('--keep-going finishes independent branches after a failure', async () => {
    const dir = testDir();
    const args = execGraph(dir, [
      { id: 'bad', script: 'exit 1' },
      { id: 'slow', script: 'sleep 0.5; echo ok > ok' },
      { id: 'after-slow', deps: ['slow'], script: 'echo ok > ok' },
      { id: 'after-bad', deps: ['bad'], script: 'echo never' },
    ]);
    const r = await run(harness, ['build', '--keep-going', '--jobs', '1', ...args]);
    expect(r.code).toBe(1);
    expect(r.stdout).toMatch(/succeeded after-slow/);
    expect(r.stdout).toMatch(/skipped after-bad/);
  });

  it('--force reruns a task and its dependants; --until stops; --only needs cached inputs', async () => {
    const dir = testDir();
    const counter = join(dir, 'runs');
    const args = execGraph(dir, [
      { id: 'a', script: `echo a >> ${counter}` },
      { id: 'b', deps: ['a'], script: `echo b >> ${counter}` },
      { id: 'c', deps: ['b'], script: `echo c >> ${counter}` },
      { id: 'other', script: `echo other >> ${counter}` },
    ]);
    const only = await run(harness, ['build', '--only', 'b', ...args]);
    expect(only.code).toBe(2);
    expect(only.stderr).toMatch(/E_NOT_CACHED: --only b: its input a is not cached \(run gpu-guest build --until a first\)/);
    expect((await run(harness, ['build', '--until', 'b', ...args])).code).toBe(0);
    expect(readFileSync(counter, 'utf8').split('\n').filter(Boolean)).toEqual(['a', 'b']);
    expect((await run(harness, ['build', ...args])).code).toBe(0);
    writeFileSync(counter, '');
    const forced = await run(harness, ['build', '--force', 'b', ...args]);
    expect(forced.code).toBe(0);
    expect(readFileSync(counter, 'utf8').split('\n').filter(Boolean)).toEqual(['b', 'c']);
    writeFileSync(counter, '');
    expect((await run(harness, ['build', '--only', 'c', '--force', 'c', ...args])).code).toBe(0);
    expect(readFileSync(counter, 'utf8').split('\n').filter(Boolean)).toEqual(['c']);
    const unknown = await run(harness, ['build', '--until', 'nope', ...args]);
    expect(unknown.code).toBe(2);
    expect(unknown.stderr).toContain('E_UNKNOWN_TASK: --until nope: no such task in demo (tasks: a, b, c, other)');
  });

  it('never overlaps two cpu:all tasks, overlaps light ones, and honours --jobs', async () => {
    const dir = testDir();
    const m = (name: string) => join(dir, name);
    // bounded waits on marker files: a task that cannot see its partner within 20 s records why
    const waitFor = (file: string, why: string) => `i=0; until [ -e ${file} ]; do i=$((i+1)); [ $i -gt 400 ] && { echo ${why} >> ${m('violations')}; break; }; sleep 0.05; done`;
    const tasks = [
      // compile-1 keeps its marker until fetch has seen it, so a fast compile cannot slip between fetch's polls
      { id: 'compile-1', cpu: 'all' as const, script: `touch ${m('c1.run')}; [ -e ${m('c2.run')} ] && echo compile-overlap >> ${m('violations')}; ${waitFor(m('fetch.saw-c1'), 'fetch-never-ran-beside-compile')}; rm ${m('c1.run')}` },
      { id: 'compile-2', cpu: 'all' as const, script: `touch ${m('c2.run')}; [ -e ${m('c1.run')} ] && echo compile-overlap >> ${m('violations')}; rm ${m('c2.run')}` },
      { id: 'fetch', script: `${waitFor(m('c1.run'), 'compile-never-ran-beside-fetch')}; touch ${m('fetch.saw-c1')}` },
    ];
    const r = await run(harness, ['build', ...execGraph(dir, tasks)]);
    expect(r.code, r.stderr).toBe(0);
    expect(existsSync(m('violations')) ? readFileSync(m('violations'), 'utf8') : '').toBe('');

    const dir2 = testDir();
    const order = join(dir2, 'order');
    const serial = ['a', 'b', 'c'].map((id) => ({ id, script: `echo "start ${id}" >> ${order}; echo "end ${id}" >> ${order}` }));
    expect((await run(harness, ['build', '--jobs', '1', ...execGraph(dir2, serial)])).code).toBe(0);
    const lines = readFileSync(order, 'utf8').trim().split('\n');
    for (let i = 0; i < lines.length; i += 2) expect(lines[i + 1]).toBe(lines[i]!.replace('start', 'end'));
  });

  it('two processes on one cache build a task once; the second waits and reuses it', async () => {
    const dir = testDir();
    const counter = join(dir, 'runs');
    const started = join(dir, 'started');
    const release = join(dir, 'release');
    const args = execGraph(dir, [{ id: 'shared', script: `echo x >> ${counter}; touch ${started}; while [ ! -e ${release} ]; do sleep 0.05; done; echo done > out.txt` }]);
    const one = start(harness, ['build', ...args]);
    await one.waitFor(/start {2}shared/);
    const two = start(harness, ['build', ...args]);
    await two.waitFor(/wait {3}shared: cache entry is locked by process \d+/);
    writeFileSync(release, '');
    const [r1, r2] = await Promise.all([one.done, two.done]);
    expect(r1.code, r1.stderr).toBe(0);
    expect(r2.code, r2.stderr).toBe(0);
    expect(readFileSync(counter, 'utf8').trim()).toBe('x');
    expect(r2.stdout).toMatch(/cached +shared/);
  });
});

describe('interruption', () => {
  for (const sig of ['SIGINT', 'SIGTERM'] as const) {
    it(`${sig} stops the running task, lets it clean up, exits 130 and leaves no entry`, async () => {
      const dir = testDir();
      const cleaned = join(dir, 'cleaned');
      const ready = join(dir, 'trap-set');
      const args = execGraph(dir, [{ id: 'long', script: `trap 'echo cleaned > ${cleaned}; exit 1' TERM; touch ${ready}; sleep 30 & wait` }]);
      const p = start(harness, ['build', '--json', ...args]);
      await fileAppears(ready);
      p.child.kill(sig);
      const r = await p.done;
      expect(r.code).toBe(130);
      expect(r.stderr).toContain('interrupted');
      expect(r.stdout).toMatch(/"type":"task:end","time":\d+,"id":"long","status":"cancelled".*"code":"E_INTERRUPTED"/);
      expect(existsSync(cleaned)).toBe(true);
      expect(entries(dir)).toHaveLength(0);
      expect(readdirSync(join(dir, 'cache/tmp'))).toHaveLength(0);
    });
  }

  it('a process killed outright leaves no entry, and the next run sweeps its scratch and succeeds', async () => {
    const dir = testDir();
    const written = join(dir, 'written');
    const args = execGraph(dir, [{ id: 'long', script: `echo partial > part.txt; touch ${written}; sleep 30` }]);
    const p = start(harness, ['build', ...args]);
    await fileAppears(written);
    p.child.kill('SIGKILL');
    await p.done;
    expect(entries(dir)).toHaveLength(0);
    expect(readdirSync(join(dir, 'cache/tmp')).length).toBeGreaterThan(0);
    const fixed = execGraph(dir, [{ id: 'long', script: `echo partial > part.txt; touch ${written}; sleep 30` }]);
    // same graph, same key: the killed process's lock and scratch must not block the rerun
    const again = start(harness, ['build', ...fixed]);
    await again.waitFor(/start {2}long/);
    again.child.kill('SIGINT');
    expect((await again.done).code).toBe(130);
    expect(readdirSync(join(dir, 'cache/tmp'))).toHaveLength(0);
  });
});
