import { execFileSync } from 'node:child_process';
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { checkPublishedSums } from '../../src/engine/publish.js';
import { execGraph, harness, repoRoot, run, testDir } from '../helpers.js';

describe('published outputs', () => {
  it('writes SHA256SUMS that sha256sum -c accepts, a manifest with every artifact, and notices a changed file', async () => {
    const dir = testDir();
    const args = execGraph(dir, [
      { id: 'a', script: 'echo alpha > a.txt; mkdir -p sub; echo beta > sub/b.txt' },
      { id: 'b', deps: ['a'], script: 'cat "$UP_a/a.txt" > b.txt' },
    ]);
    const r = await run(harness, ['build', ...args]);
    expect(r.code, r.stderr).toBe(0);
    const out = join(dir, 'out/demo');
    const sums = readFileSync(join(out, 'SHA256SUMS'), 'utf8');
    expect(sums.split('\n').filter(Boolean).map((l) => l.slice(66))).toEqual(['exec/a.txt', 'exec/b.txt', 'exec/sub/b.txt']);
    expect(execFileSync('sha256sum', ['-c', 'SHA256SUMS'], { cwd: out, encoding: 'utf8' })).toBe('exec/a.txt: OK\nexec/b.txt: OK\nexec/sub/b.txt: OK\n');
    const manifest = JSON.parse(readFileSync(join(out, 'manifest.json'), 'utf8'));
    expect(manifest.gpuGuest).toBe(JSON.parse(readFileSync(join(repoRoot, 'package.json'), 'utf8')).version);
    expect(manifest.artifacts).toContainEqual({ path: 'exec/a.txt', task: 'a', size: 6, sha256: sums.split('\n')[0]!.slice(0, 64) });
    expect(manifest.tasks.map((t: { id: string; status: string }) => [t.id, t.status])).toEqual([['a', 'succeeded'], ['b', 'succeeded']]);
    expect(await checkPublishedSums(out)).toEqual({ files: 3, wrong: [] });

    // a second build reuses the cache and says so in the manifest
    expect((await run(harness, ['build', ...args])).code).toBe(0);
    expect(JSON.parse(readFileSync(join(out, 'manifest.json'), 'utf8')).tasks.map((t: { status: string }) => t.status)).toEqual(['cached', 'cached']);

    // a published file replaced (never written in place: it is a hard link into the cache) and one removed
    rmSync(join(out, 'exec/b.txt'));
    writeFileSync(join(out, 'exec/b.txt'), 'tampered\n');
    rmSync(join(out, 'exec/sub/b.txt'));
    expect(await checkPublishedSums(out)).toEqual({ files: 3, wrong: ['exec/b.txt differs from its sha256', 'exec/sub/b.txt is missing'] });
    expect(await checkPublishedSums(join(dir, 'nowhere'))).toBeUndefined();
  });
});
