import { execFileSync } from 'node:child_process';
import { mkdirSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import type { LockFile } from '../../src/engine/lock.js';
import { importBundle, unpackBundle, writeBundle } from '../../src/sys/bundle.js';
import { memoryLog } from '../../src/sys/task-log.js';
import { testDir } from '../helpers.js';

const lock: LockFile = { gpuGuestLock: 1, pipeline: 'p', sourceDate: 1704067200, tasks: {} };
const log = memoryLog;

/** A bundle of the lock and two downloads; returns it and a folder to unpack into. */
async function makeBundle(signingKey?: string) {
  const dir = testDir();
  const a = join(dir, 'linux-6.1.192.tar.xz');
  const b = join(dir, 'NVIDIA.run');
  writeFileSync(a, 'kernel bytes');
  writeFileSync(b, 'driver bytes');
  const file = join(dir, 'p.bundle.tar');
  const index = await writeBundle(file, join(dir, 'stage'), { lock, downloads: [{ file: a, path: 'downloads/aa-linux-6.1.192.tar.xz' }, { file: b, path: 'downloads/bb-NVIDIA.run' }], debs: [], signingKey, log: log() });
  return { dir, file, index };
}

/** Unpacks the bundle, lets `change` alter the tree, packs it again under another name. */
function repack(dir: string, file: string, change: (root: string) => void): string {
  const root = join(dir, `edit-${Math.random().toString(16).slice(2)}`);
  mkdirSync(root);
  execFileSync('tar', ['-xf', file, '-C', root]);
  change(root);
  const out = `${root}.tar`;
  execFileSync('tar', ['-cf', out, '-C', root, '.']);
  return out;
}

describe('bundles', () => {
  it('index every file by size and sha256, as a sorted tar dated the source date; unpack checks them and import moves the downloads into the cache', async () => {
    const { dir, file, index } = await makeBundle();
    expect(index.files.map((f) => f.path)).toEqual(['bundle-key.gpg', 'downloads/aa-linux-6.1.192.tar.xz', 'downloads/bb-NVIDIA.run', 'lock.json']);
    expect(execFileSync('tar', ['-tf', file], { encoding: 'utf8' })).toMatch(/^\.\/bundle\.json\.asc$/m);
    const listing = execFileSync('tar', ['--full-time', '-tvf', file], { encoding: 'utf8' });
    expect(listing).toMatch(/ 0\/0 .* 2024-01-01 00:00:00 \.\/bundle\.json$/m);
    const into = join(dir, 'into');
    const unpacked = await unpackBundle(file, into, log());
    expect(unpacked.lock).toEqual(lock);
    expect(unpacked.signedBy).toBe('bundled key');
    const cache = join(dir, 'cache');
    expect(importBundle(into, unpacked.index, unpacked.lock, cache)).toBe(2);
    expect(readFileSync(join(cache, 'downloads/aa-linux-6.1.192.tar.xz'), 'utf8')).toBe('kernel bytes');
  });

  it('names every damaged, missing or unlisted file, a link, and what is not a bundle at all', async () => {
    const { dir, file } = await makeBundle();
    const damaged = repack(dir, file, (root) => writeFileSync(join(root, 'downloads/bb-NVIDIA.run'), 'driver bytez'));
    await expect(unpackBundle(damaged, join(dir, 'u1'), log())).rejects.toMatchObject({ code: 'E_BUNDLE_CORRUPT', message: expect.stringMatching(/is damaged: downloads\/bb-NVIDIA\.run: sha256 differs from the index's [0-9a-f]{12}…; fetch the bundle again$/) });
    const resized = repack(dir, file, (root) => writeFileSync(join(root, 'downloads/bb-NVIDIA.run'), 'driver'));
    await expect(unpackBundle(resized, join(dir, 'u2'), log())).rejects.toMatchObject({ message: expect.stringContaining('downloads/bb-NVIDIA.run: 6 bytes, the index says 12') });
    const changed = repack(dir, file, (root) => {
      execFileSync('rm', [join(root, 'downloads/aa-linux-6.1.192.tar.xz')]);
      writeFileSync(join(root, 'downloads/extra'), 'x');
    });
    await expect(unpackBundle(changed, join(dir, 'u3'), log())).rejects.toMatchObject({ details: ['downloads/aa-linux-6.1.192.tar.xz: missing', 'downloads/extra: not in the bundle\'s index'] });
    const linked = repack(dir, file, (root) => symlinkSync('/etc/passwd', join(root, 'downloads/link')));
    await expect(unpackBundle(linked, join(dir, 'u4'), log())).rejects.toMatchObject({ code: 'E_BUNDLE_CORRUPT', message: expect.stringContaining('downloads/link is not a regular file') });
    const noIndex = repack(dir, file, (root) => execFileSync('rm', [join(root, 'bundle.json')]));
    await expect(unpackBundle(noIndex, join(dir, 'u5'), log())).rejects.toMatchObject({ message: expect.stringContaining('has no bundle.json: not a gpu-guest bundle') });
    const notTar = join(dir, 'garbage.tar');
    writeFileSync(notTar, 'not a tar archive at all');
    await expect(unpackBundle(notTar, join(dir, 'u6'), log())).rejects.toMatchObject({ message: expect.stringMatching(/is not a readable tar archive \(tar: This does not look like a tar archive\)/) });
    await expect(unpackBundle(join(dir, 'none.tar'), join(dir, 'u7'), log())).rejects.toMatchObject({ code: 'E_USAGE' });
  });

  it("signs the index and the repository with the user's key, and a trusted key vouches for who made the bundle", async () => {
    const keys = testDir();
    const gpg = (home: string, args: string[]) => execFileSync('gpg', ['--homedir', home, '--batch', '--pinentry-mode', 'loopback', '--passphrase', '', ...args], { stdio: ['ignore', 'pipe', 'ignore'] });
    const key = (name: string) => {
      const home = join(keys, name);
      mkdirSync(home, { mode: 0o700 });
      gpg(home, ['--quick-gen-key', `${name} <${name}@example.invalid>`, 'ed25519', 'sign', 'never']);
      writeFileSync(join(keys, `${name}.secret.gpg`), gpg(home, ['--export-secret-keys']));
      writeFileSync(join(keys, `${name}.asc`), gpg(home, ['--export', '--armor']));
      return { secret: join(keys, `${name}.secret.gpg`), public: join(keys, `${name}.asc`) };
    };
    const release = key('release');
    const other = key('other');
    const { dir, file } = await makeBundle(release.secret);
    // the armored public key, as a release engineer hands it out
    await expect(unpackBundle(file, join(dir, 't1'), log(), undefined, release.public)).resolves.toMatchObject({ signedBy: 'trusted key' });
    await expect(unpackBundle(file, join(dir, 't2'), log(), undefined, other.public)).rejects.toMatchObject({ code: 'E_BUNDLE_CORRUPT', message: expect.stringMatching(/bundle\.json's signature does not verify against --trusted-key \S+other\.asc/) });
    // re-indexed after a change: the digests agree, the signature does not
    const reindexed = repack(dir, file, (root) => {
      writeFileSync(join(root, 'downloads/bb-NVIDIA.run'), 'driver bytez');
      const index = JSON.parse(readFileSync(join(root, 'bundle.json'), 'utf8'));
      index.files.find((f: { path: string }) => f.path === 'downloads/bb-NVIDIA.run').sha256 = execFileSync('sha256sum', [join(root, 'downloads/bb-NVIDIA.run')], { encoding: 'utf8' }).split(' ')[0];
      writeFileSync(join(root, 'bundle.json'), JSON.stringify(index));
    });
    await expect(unpackBundle(reindexed, join(dir, 't3'), log())).rejects.toMatchObject({ message: expect.stringMatching(/bundle\.json's signature does not verify against the bundle's key/) });
    const unsigned = repack(dir, file, (root) => execFileSync('rm', [join(root, 'bundle.json.asc')]));
    await expect(unpackBundle(unsigned, join(dir, 't4'), log())).resolves.toMatchObject({ signedBy: 'unsigned' });
    await expect(unpackBundle(unsigned, join(dir, 't5'), log(), undefined, release.public)).rejects.toMatchObject({ message: expect.stringMatching(/its bundle\.json is not signed, so --trusted-key \S+ cannot vouch for it/) });
    // a public key cannot sign
    await expect(makeBundle(release.public)).rejects.toMatchObject({ code: 'E_USAGE', message: expect.stringMatching(/--signing-key \S+release\.asc: it holds no secret key/) });
  });
});
