import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
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

  it('appends a dm-verity tree to an erofs image: reproducible root hash, verified, Kata kernel_params', async () => {
    const r = await image('erofs', ['--force', 'image', '--set', 'image.verity=true']);
    expect(r.code, r.stderr).toBe(0);
    const manifest = JSON.parse(readFileSync(join(r.out, 'manifest.json'), 'utf8'));
    const result = manifest.tasks.find((t: { id: string }) => t.id === 'image').result;
    const v = result.verity;
    expect(v).toMatchObject({ algorithm: 'sha256', dataBlockSize: 4096, hashBlockSize: 4096 });
    expect(v.rootHash).toMatch(/^[0-9a-f]{64}$/);
    const img = join(r.out, 'rootfs/kata-containers-intel-gpu.img');
    expect(result.imageBytes).toBeGreaterThan(v.dataBlocks * 4096);
    const args = (file: string) => ['verify', '--hash=sha256', '--data-block-size=4096', '--hash-block-size=4096', `--data-blocks=${v.dataBlocks}`, `--hash-offset=${v.hashStartBlock * 4096}`, '--no-superblock', `--salt=${v.salt}`, file, file, v.rootHash];
    execFileSync('veritysetup', args(img), { stdio: 'ignore' });
    const kata = readFileSync(join(r.out, 'kata/configuration-intel-gpu.toml'), 'utf8');
    expect(kata).toContain(`kernel_params = "dm-mod.create=\\"gpu-guest-root,,,ro,0 ${v.dataBlocks * 8} verity 1 /dev/vda /dev/vda 4096 4096 ${v.dataBlocks} ${v.dataBlocks} sha256 ${v.rootHash} ${v.salt}\\" root=/dev/dm-0 rootfstype=erofs ro"`);
    // one flipped byte in the data is caught
    const tampered = join(r.dir, 'tampered.img');
    const bytes = readFileSync(img);
    bytes[4096 * 2 + 17] ^= 0xff;
    writeFileSync(tampered, bytes);
    expect(() => execFileSync('veritysetup', args(tampered), { stdio: 'ignore' })).toThrow();
    const again = await image('erofs', ['--force', 'image', '--set', 'image.verity=true']);
    const second = JSON.parse(readFileSync(join(again.out, 'manifest.json'), 'utf8')).tasks.find((t: { id: string }) => t.id === 'image').result;
    expect(second.verity.rootHash).toBe(v.rootHash);
  }, 600_000);

  it('refuses image.verity on a format other than erofs, at load time', async () => {
    const r = await run(cliBin, ['plan', '--pipeline', writePipeline(testDir(), 'intel', '  version: "6.1"\n'), '--set', 'image.verity=true']);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/E_PIPELINE_INVALID: .*image\.verity needs image\.format: erofs \(the read-only measured rootfs Kata uses\), not ext4/);
  });
});
