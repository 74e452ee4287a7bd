import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { LocalCacheStore } from '../../src/engine/cache.js';
import { DigestMemo } from '../../src/engine/digest.js';
import { checkLock, lockDifferences, lockGraph, readLock, writeLock } from '../../src/engine/lock.js';
import { planRun } from '../../src/engine/plan.js';
import type { JsonObject } from '../../src/model/json.js';
import { createStepRegistry } from '../../src/model/step.js';
import type { TaskGraph } from '../../src/model/task.js';
import { testDir } from '../helpers.js';

// `fetch` resolves a range to the newest version a "mirror" lists and pins what it downloads;
// `plain` has no remote input, so a lock never records it
let listed = '1.2.3';
let resolutions = 0;
const steps = createStepRegistry([
  {
    kind: 'fetch',
    version: 1,
    resources: { cpu: 1 },
    resolve: async (p: JsonObject, _files, ctx) => {
      if (!ctx.network) throw Object.assign(new Error('needs the mirror'), { code: 'E_NEEDS_NETWORK' });
      resolutions++;
      return { ...p, exact: listed };
    },
    lock: async (p: JsonObject) => ({ ...p, pinned: [{ name: 'a', sha256: 'a'.repeat(64) }] }),
    run: async () => ({}),
  },
  { kind: 'plain', version: 1, resources: { cpu: 1 }, run: async () => ({}) },
]);

const graph = (range = '1', packages = ['x', 'y']): TaskGraph => ({
  pipeline: 'p',
  tasks: [
    { id: 'source', kind: 'fetch', upstream: {}, params: { range, packages }, files: {}, title: 'source' },
    { id: 'image', kind: 'plain', upstream: { source: 'source' }, params: { size: 1 }, files: {}, title: 'image' },
  ],
});
const ctx = { signal: new AbortController().signal, cacheDir: testDir(), network: true };

describe('lock files', () => {
  it('records the declared and resolved parameters of every task with a remote input, keys sorted, and reads them back', async () => {
    const dir = testDir();
    const lock = await lockGraph(graph(), steps, 1700000000, ctx);
    expect(Object.keys(lock.tasks)).toEqual(['source']);
    expect(lock.tasks.source).toEqual({ kind: 'fetch', declared: { range: '1', packages: ['x', 'y'] }, resolved: { range: '1', packages: ['x', 'y'], exact: '1.2.3', pinned: [{ name: 'a', sha256: 'a'.repeat(64) }] } });
    const file = join(dir, 'p.lock.json');
    writeLock(file, lock);
    const text = readFileSync(file, 'utf8');
    expect(text.indexOf('"declared"')).toBeLessThan(text.indexOf('"kind"'));
    expect(text.indexOf('"exact"')).toBeLessThan(text.lastIndexOf('"packages"'));
    expect(readLock(file)).toEqual(lock);
    expect(lockDifferences(lock, graph(), steps, 1700000000)).toEqual([]);
  });

  it('names every difference from the pipeline: a changed value, a list grown and shrunk, a source date, a task gone or new', async () => {
    const lock = await lockGraph(graph(), steps, 1700000000, ctx);
    expect(lockDifferences(lock, graph('2', ['y', 'z']), steps, 1700000001)).toEqual([
      'sourceDate: locked 1700000000, now 1700000001',
      'source packages: added "z"; removed "x"',
      'source range: locked "1", now "2"',
    ]);
    const renamed: TaskGraph = { pipeline: 'p', tasks: [{ ...graph().tasks[0]!, id: 'kernel' }] };
    expect(lockDifferences(lock, renamed, steps, 1700000000)).toEqual(['kernel: not in the lock', 'source: in the lock, not in the pipeline']);
    const file = 'p.lock.json';
    expect(() => checkLock(file, lock, graph('1', ['x']), steps, 1700000000)).toThrow(expect.objectContaining({ code: 'E_LOCK_MISMATCH', message: expect.stringContaining('source packages: removed "y"; refresh it with --update-lock'), details: ['source packages: removed "y"'] }));
  });

  it('refuses a file that is not a lock: missing, not JSON, another format, a task without its parts', () => {
    const dir = testDir();
    expect(() => readLock(join(dir, 'none.json'))).toThrow(expect.objectContaining({ code: 'E_USAGE', message: expect.stringContaining('gpu-guest lock --lock') }));
    const bad = join(dir, 'bad.json');
    writeFileSync(bad, '{"gpuGuestLock": 1,');
    expect(() => readLock(bad)).toThrow(expect.objectContaining({ code: 'E_LOCK_INVALID' }));
    writeFileSync(bad, JSON.stringify({ gpuGuestLock: 2, pipeline: 'p', sourceDate: 1, tasks: {} }));
    expect(() => readLock(bad)).toThrow(expect.objectContaining({ code: 'E_LOCK_INVALID', message: expect.stringContaining('format 2, this gpu-guest reads 1') }));
    writeFileSync(bad, JSON.stringify({ gpuGuestLock: 1, pipeline: 'p', sourceDate: 1, tasks: { source: { kind: 'fetch', declared: {} } } }));
    expect(() => readLock(bad)).toThrow(expect.objectContaining({ code: 'E_LOCK_INVALID', message: expect.stringContaining('task source lacks') }));
  });

  it('a plan with the lock takes its resolution without asking the mirror, even when the mirror moved on', async () => {
    listed = '1.2.3';
    const lock = await lockGraph(graph(), steps, 1700000000, ctx);
    listed = '1.2.4';
    const store = LocalCacheStore.open(join(testDir(), 'cache'));
    const before = resolutions;
    const plan = await planRun(graph(), {}, { steps, store, memo: new DigestMemo(), signal: ctx.signal, network: false, lock });
    expect(resolutions).toBe(before);
    const source = plan.tasks.find((t) => t.id === 'source')!;
    expect(source.params).toMatchObject({ exact: '1.2.3', pinned: [{ name: 'a' }] });
    expect(source.reasons).toContain('resolved from the lock');
    const unlocked = await planRun(graph(), {}, { steps, store, memo: new DigestMemo(), signal: ctx.signal, network: true });
    expect(unlocked.tasks.find((t) => t.id === 'source')!.params).toMatchObject({ exact: '1.2.4' });
    expect(unlocked.tasks.find((t) => t.id === 'source')!.key).not.toBe(source.key);
  });

  it("a task's lock sees the locked parameters of the lockable tasks it reads (a driver's packages are what apt adds to the locked rootfs)", async () => {
    const seen: JsonObject[] = [];
    let rootfsDone = false;
    const chained = createStepRegistry([
      {
        kind: 'rootfs',
        version: 1,
        resources: { cpu: 1 },
        lock: async (p: JsonObject) => {
          // slower than the driver's own start: the driver must wait for it, not race it
          await new Promise((r) => setTimeout(r, 30));
          rootfsDone = true;
          return { ...p, locked: ['libc6=2.36'] };
        },
        run: async () => ({}),
      },
      {
        kind: 'driver',
        version: 1,
        resources: { cpu: 1 },
        lock: async (p: JsonObject, _files, _ctx, upstream) => {
          expect(rootfsDone).toBe(true);
          seen.push(upstream);
          return { ...p, locked: ['dkms=3'] };
        },
        run: async () => ({}),
      },
      { kind: 'plain', version: 1, resources: { cpu: 1 }, run: async () => ({}) },
    ]);
    const lock = await lockGraph(
      {
        pipeline: 'p',
        tasks: [
          { id: 'driver', kind: 'driver', upstream: { rootfs: 'rootfs', debs: 'debs' }, params: { pins: ['a'] }, files: {}, title: 'driver' },
          { id: 'debs', kind: 'plain', upstream: {}, params: {}, files: {}, title: 'debs' },
          { id: 'rootfs', kind: 'rootfs', upstream: {}, params: { suite: 's' }, files: {}, title: 'rootfs' },
        ],
      },
      chained,
      1700000000,
      ctx,
    );
    // only lockable upstreams are passed, by their role; each task is locked once
    expect(seen).toEqual([{ rootfs: { suite: 's', locked: ['libc6=2.36'] } }]);
    expect(Object.keys(lock.tasks)).toEqual(['driver', 'rootfs']);
    expect(lock.tasks.driver!.resolved).toEqual({ pins: ['a'], locked: ['dkms=3'] });
  });
});
