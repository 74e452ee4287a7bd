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

  it("lists the committed entries of a kind (a kernel build's seeds), never a scratch folder, without counting it as a use", async () => {
    const { root, store } = await cacheWith([{ key: 'a'.repeat(64), mib: 0, daysAgo: 30 }]);
    const running = await store.begin('b'.repeat(64));
    mkdirSync(join(root, 'entries', 'c'.repeat(64)));
    const found = await store.entriesOf('image');
    expect(found.map((e) => e.key)).toEqual(['a'.repeat(64)]);
    expect(found[0]!.outDir).toBe(join(root, 'entries', 'a'.repeat(64), 'out'));
    expect(await store.entriesOf('kernel-build')).toEqual([]);
    expect(Date.now() - statSync(join(root, 'entries', 'a'.repeat(64), 'meta.json')).mtimeMs).toBeGreaterThan(29 * DAY);
    await store.discard(running);
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

  it("prunes the stores of fetched inputs (downloads/, debs/) by their last use too, never a download in progress, and a reuse counts as use", async () => {
    const { root } = await cacheWith([{ key: '9'.repeat(64), mib: 1, daysAgo: 5 }]);
    const put = (path: string, mib: number, daysAgo: number) => {
      mkdirSync(join(root, path, '..'), { recursive: true });
      writeFileSync(join(root, path), Buffer.alloc(mib * MiB, 2));
      const when = new Date(Date.now() - daysAgo * DAY);
      utimesSync(join(root, path), when, when);
    };
    const tarball = `downloads/${'a'.repeat(64)}-linux-6.1.192.tar.xz`;
    put(tarball, 3, 40);
    put(`debs/${'b'.repeat(64)}_kmod_30+20221128-1_amd64.deb`, 1, 20);
    put(`debs/${'c'.repeat(64)}_dkms_3.0.10-8_all.deb`, 1, 1);
    put(`downloads/${'d'.repeat(64)}-NVIDIA.run.part`, 1, 0);
    const list = await run(cliBin, ['cache', 'list', '--cache-dir', root]);
    expect(list.stdout).toMatch(/ {2}downloads\/ +2 stored files \(fetched inputs; cache prune removes them by last use too\)\n/);
    expect(list.stdout).toMatch(/ {2}debs\/ +2 stored files /);
    expect(list.stdout).toMatch(/1 entry and 4 stored files, 7\.\d MiB in /);

    const byAge = pruneCache(root, { olderThanMs: 10 * DAY });
    expect(byAge.removed.map((e) => e.key)).toEqual([tarball, `debs/${'b'.repeat(64)}_kmod_30+20221128-1_amd64.deb`]);
    expect(existsSync(join(root, tarball))).toBe(false);
    // by size: the least recently used first, entries and files alike; the .part being written stays
    const bySize = pruneCache(root, { maxBytes: 0 });
    expect(bySize.removed.map((e) => e.key)).toEqual(['9'.repeat(64), `debs/${'c'.repeat(64)}_dkms_3.0.10-8_all.deb`]);
    expect(bySize.busy.map((b) => [b.entry.key, b.why])).toEqual([[`downloads/${'d'.repeat(64)}-NVIDIA.run.part`, 'a download in progress']]);

    // a build that finds a stored file makes it recently used
    const { downloadVerified } = await import('../../src/sys/download.js');
    const { sha256File } = await import('../../src/sys/hash.js');
    put(tarball, 1, 30);
    const file = join(root, tarball);
    await downloadVerified({ urls: ['http://127.0.0.1:9/unused'], dest: file, sha256: await sha256File(file), what: 'the tarball', network: false });
    expect(Date.now() - statSync(file).mtimeMs).toBeLessThan(60_000);
  });
});
