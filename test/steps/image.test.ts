import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { cliBin, run, sharedCacheDir, testDir, writePipeline } from '../helpers.js';

// The intel rootfs from the shared cache; only the image task runs here.
async function image(format: string, extra: string[] = []) {
  const dir = testDir();
  const file = writePipeline(dir, 'intel', '  version: "6.1"\n  source:\n    tarball: apt:linux-source-6.1\n');
  const r = await run(cliBin, ['build', '--until', 'image', '--pipeline', file, '--cache-dir', sharedCacheDir(), '--out-dir', join(dir, 'out'), '--set', `image.format=${format}`, ...extra]);
  return { ...r, dir, out: join(dir, 'out/intel-test') };
}

const sha = (f: string) => createHash('sha256').update(readFileSync(f)).digest('hex');

describe('image formats', () => {
  it('makes a reproducible gzip cpio initrd with the Kata initrd name', async () => {
    const a = await image('initrd');
    expect(a.code, a.stderr).toBe(0);
    const img = join(a.out, 'rootfs/kata-containers-initrd-intel-gpu.img');
    const listing = execFileSync('sh', ['-c', `gzip -dc "${img}" | cpio -t --quiet`], { encoding: 'utf8' });
    expect(listing).toMatch(/^(\.\/)?etc\/os-release$/m);
    expect(readFileSync(join(a.out, 'kata/configuration-intel-gpu.toml'), 'utf8')).toContain('initrd = "/usr/share/kata-containers/kata-containers-initrd-intel-gpu.img"');
    const b = await image('initrd', ['--force', 'image']);
    expect(b.stdout).toMatch(/succeeded image/);
    expect(sha(join(b.out, 'rootfs/kata-containers-initrd-intel-gpu.img'))).toBe(sha(img));
  }, 600_000);

  it('makes the same ext4 image twice from the same inputs, and it checks clean', async () => {
    const a = await image('ext4', ['--force', 'image']);
    expect(a.code, a.stderr).toBe(0);
    const file = 'rootfs/kata-containers-intel-gpu.img';
    execFileSync('e2fsck', ['-fn', join(a.out, file)], { stdio: 'ignore' });
    const b = await image('ext4', ['--force', 'image']);
    expect(b.code, b.stderr).toBe(0);
    expect(sha(join(b.out, file))).toBe(sha(join(a.out, file)));
  }, 600_000);

  it('makes a reproducible erofs image', async () => {
    const r = await image('erofs', ['--force', 'image']);
    expect(r.code, r.stderr).toBe(0);
    const img = join(r.out, 'rootfs/kata-containers-intel-gpu.img');
    // erofs superblock magic 0xE0F5E1E2 at offset 1024
    expect(readFileSync(img).readUInt32LE(1024)).toBe(0xe0f5e1e2);
    const again = await image('erofs', ['--force', 'image']);
    expect(sha(join(again.out, 'rootfs/kata-containers-intel-gpu.img'))).toBe(sha(img));
  }, 600_000);
});
