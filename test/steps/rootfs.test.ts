import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { cliBin, pathWithout, run, testDir, writePipeline } from '../helpers.js';

describe('rootfs', () => {
  it('falls back to debootstrap when mmdebstrap is absent', async () => {
    const dir = testDir();
    const file = writePipeline(dir, 'intel', '  version: "6.1"\n  source:\n    tarball: apt:linux-source-6.1\n');
    const r = await run(cliBin, ['build', '--until', 'rootfs', '--pipeline', file, '--cache-dir', join(dir, 'cache'), '--out-dir', join(dir, 'out')], { env: { PATH: pathWithout(dir, ['mmdebstrap']) } });
    expect(r.code, r.stderr).toBe(0);
    const manifest = JSON.parse(readFileSync(join(dir, 'out/intel-test/manifest.json'), 'utf8'));
    expect(manifest.tasks.find((t: { id: string }) => t.id === 'rootfs').result).toMatchObject({ builder: 'debootstrap', suite: 'bookworm' });
    const entry = readdirSync(join(dir, 'cache/entries')).map((k) => join(dir, 'cache/entries', k, 'out/rootfs.tar'));
    const listing = execFileSync('tar', ['-tf', entry[0]!], { encoding: 'utf8', maxBuffer: 64 * 2 ** 20 });
    expect(listing).toMatch(/^\.\/usr\/bin\/kmod$/m);
    expect(listing).not.toMatch(/^\.\/etc\/hostname$/m);
  }, 900_000);
});
