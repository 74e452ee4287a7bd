import { existsSync, mkdirSync, statSync, utimesSync, writeFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { LocalCacheStore } from '../../src/engine/cache.js';
import { listEntries, parseAge, parseSize, pruneCache } from '../../src/engine/prune.js';
import { cliBin, run, testDir } from '../helpers.js';

const DAY = 86_400_000;
const MiB = 1024 * 1024;

/** A real cache with entries of the given sizes, each last used `daysAgo` days ago. */
async function cacheWith(entries: { key: string; mib: number; daysAgo: number }[]) {
  const root = join(testDir(), 'cache');
  const store = LocalCacheStore.open(root);
  for (const e of entries) {
    const scratch = await store.begin(e.key);
    writeFileSync(join(scratch.outDir, 'blob'), Buffer.alloc(e.mib * MiB, 1));
    await store.commit(scratch, { key: e.key, task: `task-${e.key}`, kind: 'image', pipeline: 'p', material: { kind: 'image', stepVersion: 1, params: {}, inputs: {}, upstream: {} }, result: {}, outputs: {}, durationMs: 0 });
    const when = new Date(Date.now() - e.daysAgo * DAY);
    utimesSync(join(root, 'entries', e.key, 'meta.json'), when, when);
  }
  return { root, store };
}

describe('cache prune', () => {
  it('a build\'s use of an entry counts as its last use; plan\'s read-only look does not', async () => {
    const { root, store } = await cacheWith([{ key: 'a'.repeat(64), mib: 1, daysAgo: 30 }]);
    const meta = join(root, 'entries', 'a'.repeat(64), 'meta.json');
    await LocalCacheStore.openReadOnly(root).get('a'.repeat(64));
    expect(Date.now() - statSync(meta).mtimeMs).toBeGreaterThan(29 * DAY);
    await store.get('a'.repeat(64));
    expect(Date.now() - statSync(meta).mtimeMs).toBeLessThan(60_000);
  });

  it('removes entries unused for longer than --older-than, then the least recently used beyond --max-size', async () => {
    const [old, mid, fresh, newest] = ['1', '2', '3', '4'].map((c) => c.repeat(64)) as [string, string, string, string];
    const { root } = await cacheWith([
      { key: old, mib: 4, daysAgo: 40 },
      { key: mid, mib: 4, daysAgo: 10 },
      { key: fresh, mib: 4, daysAgo: 2 },
      { key: newest, mib: 4, daysAgo: 0 },
    ]);
    expect(listEntries(root).map((e) => e.key)).toEqual([old, mid, fresh, newest]);
    const byAge = pruneCache(root, { olderThanMs: 30 * DAY });
    expect(byAge.removed.map((e) => e.key)).toEqual([old]);
    expect(existsSync(join(root, 'entries', old))).toBe(false);
    const dry = pruneCache(root, { maxBytes: 9 * MiB, dryRun: true });
    expect(dry.removed.map((e) => e.key)).toEqual([mid]);
    expect(existsSync(join(root, 'entries', mid))).toBe(true);
    const bySize = pruneCache(root, { maxBytes: 5 * MiB });
    expect(bySize.removed.map((e) => e.key)).toEqual([mid, fresh]);
    expect(bySize.keptBytes).toBeLessThanOrEqual(5 * MiB);
    expect(listEntries(root).map((e) => e.key)).toEqual([newest]);
  });

  it('keeps an entry a live build has locked, and says why', async () => {
    const [locked, free] = ['5'.repeat(64), '6'.repeat(64)];
    const { root } = await cacheWith([
      { key: locked, mib: 1, daysAgo: 50 },
      { key: free, mib: 1, daysAgo: 40 },
    ]);
    writeFileSync(join(root, 'locks', `${locked}.lock`), JSON.stringify({ pid: process.pid, host: hostname() }));
    const report = pruneCache(root, { olderThanMs: DAY });
    expect(report.removed.map((e) => e.key)).toEqual([free]);
    expect(report.busy).toEqual([{ entry: expect.objectContaining({ key: locked }), why: `locked by process ${process.pid} on ${hostname()}` }]);
    expect(existsSync(join(root, 'entries', locked))).toBe(true);
  });

  it('reads ages and sizes as a user writes them', () => {
    expect([parseAge('14d'), parseAge('12h'), parseAge('30m'), parseAge('2w'), parseAge('')]).toEqual([14 * DAY, DAY / 2, 1_800_000, undefined, undefined]);
    expect([parseSize('40G'), parseSize('500M'), parseSize('1.5TiB'), parseSize('10'), parseSize('lots')]).toEqual([40 * 1024 * MiB, 500 * MiB, 1.5 * 1024 ** 4, undefined, undefined]);
  });

  it('on the command line: list, prune with a dry run, and one-line errors for bad limits or a folder that is no cache', async () => {
    const { root } = await cacheWith([
      { key: '7'.repeat(64), mib: 2, daysAgo: 20 },
      { key: '8'.repeat(64), mib: 2, daysAgo: 1 },
    ]);
    const list = await run(cliBin, ['cache', 'list', '--cache-dir', root]);
    expect(list.code, list.stderr).toBe(0);
    expect(list.stdout).toMatch(/^\d{4}-\d\d-\d\d \d\d:\d\d\s+2\.0 MiB {2}777777777777 {2}image {12}p\/task-7{64}\n/);
    expect(list.stdout).toMatch(/2 entries, 4\.0 MiB in /);
    const dry = await run(cliBin, ['cache', 'prune', '--older-than', '7d', '--dry-run', '--cache-dir', root]);
    expect(dry.stdout).toMatch(/would remove .*777777777777 .*\nwould remove 1 entry \(2\.0 MiB\); 2\.0 MiB left in /);
    expect(existsSync(join(root, 'entries', '7'.repeat(64)))).toBe(true);
    const real = await run(cliBin, ['cache', 'prune', '--older-than', '7d', '--cache-dir', root, '--json']);
    const report = JSON.parse(real.stdout) as { dryRun: boolean; removed: { key: string }[]; freedBytes: number };
    expect(report).toMatchObject({ dryRun: false, removed: [{ key: '7'.repeat(64) }] });
    // allocated blocks: the 2 MiB output plus the entry's folders and meta.json
    expect(report.freedBytes).toBeGreaterThanOrEqual(2 * MiB);
    expect(report.freedBytes).toBeLessThan(2.1 * MiB);
    const none = await run(cliBin, ['cache', 'prune', '--cache-dir', root]);
    expect([none.code, none.stderr]).toEqual([2, expect.stringMatching(/^error: E_USAGE: cache prune: give --older-than AGE \(e\.g\. 14d\) and\/or --max-size SIZE/)]);
    const bad = await run(cliBin, ['cache', 'prune', '--max-size', 'lots', '--cache-dir', root]);
    expect([bad.code, bad.stderr]).toEqual([2, expect.stringMatching(/^error: E_USAGE: --max-size lots: expected a size such as 40G/)]);
    const other = join(testDir(), 'not-a-cache');
    mkdirSync(join(other, 'entries'), { recursive: true });
    const refused = await run(cliBin, ['cache', 'prune', '--max-size', '1G', '--cache-dir', other]);
    expect([refused.code, refused.stderr]).toEqual([2, expect.stringMatching(/^error: E_CLEAN_REFUSED: refusing to prune .*not-a-cache: it is not a gpu-guest cache/)]);
  });
});
