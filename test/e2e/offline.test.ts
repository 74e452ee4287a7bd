import { execFile } from 'node:child_process';
import { mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DEBIAN_TARBALL, debianKernelVersion, startKernelOrg, type KernelOrg } from '../fixtures/kernel-org.js';
import { cliBin, leakedMounts, run, sharedCacheDir, suiteDir, writePipeline, type Proc } from '../helpers.js';
import { sha256File } from '../../src/sys/hash.js';

const version = debianKernelVersion();
let server: KernelOrg;
let dir: string;
let cache: string;
let file: string;

/** gpu-guest in a network namespace of its own: only a loopback that is down, no route anywhere. */
async function runWithoutNetwork(args: string[]): Promise<Proc> {
  const argv = ['--net', '--', process.execPath, cliBin, ...args];
  const r = await promisify(execFile)('unshare', argv, { env: { ...process.env, CI: 'true' }, maxBuffer: 16 << 20 }).then(
    (ok) => ({ code: 0, ...ok }),
    (e: { code: number; stdout: string; stderr: string }) => ({ code: e.code, stdout: e.stdout, stderr: e.stderr }),
  );
  return r;
}

// The kernel path's inputs through a kernel.org-style mirror on 127.0.0.1, into a cache of this
// file's own (the shared one is not for dropping entries); the rootfs from the shared cache.
beforeAll(async () => {
  server = await startKernelOrg([{ path: `v6.x/linux-${version}.tar.xz`, file: DEBIAN_TARBALL }]);
  dir = suiteDir('gpu-guest-offline-');
  cache = join(dir, 'cache');
  file = writePipeline(dir, 'intel', `  version: "6.1"\n  source:\n    mirrors: [${server.mirror}]\n`);
}, 60_000);
afterAll(async () => server?.close());

const common = (out: string, c = cache) => ['--pipeline', file, '--cache-dir', c, '--out-dir', join(dir, out)];

describe('build --offline', () => {
  it('in a network namespace without routes: reruns the kernel source from the cached download and the recorded resolution, and finds the rest cached', async () => {
    const online = await run(cliBin, ['build', '--until', 'kernel-source', ...common('online')]);
    expect(online.code, online.stderr).toBe(0);
    const asked = server.requests.length;
    expect(asked).toBeGreaterThan(0);
    const offline = await runWithoutNetwork(['build', '--offline', '--until', 'kernel-source', '--force', 'kernel-source', ...common('offline')]);
    expect(offline.code, `${offline.stdout}\n${offline.stderr}`).toBe(0);
    expect(offline.stdout).toMatch(/ succeeded kernel-source in /);
    const manifest = JSON.parse(readFileSync(join(dir, 'offline/intel-test/manifest.json'), 'utf8'));
    expect(manifest.tasks[0].result).toMatchObject({ version, sha256: await sha256File(DEBIAN_TARBALL) });
    expect(server.requests.length).toBe(asked);
    // the rootfs and image: what any build of this pipeline made in the shared cache
    expect((await run(cliBin, ['build', '--until', 'image', ...common('shared-online', sharedCacheDir())])).code).toBe(0);
    const image = await runWithoutNetwork(['build', '--offline', '--until', 'image', ...common('shared-offline', sharedCacheDir())]);
    expect(image.code, `${image.stdout}\n${image.stderr}`).toBe(0);
    expect(image.stdout).toMatch(/cached rootfs/);
    expect(leakedMounts(sharedCacheDir())).toEqual([]);
  }, 600_000);

  it('names what would need the network, at once and without a request: a resolution never recorded, a download not in the cache, a mirror for the rootfs, an apt download', async () => {
    const empty = join(dir, 'empty-cache');
    const before = server.requests.length;
    const range = await run(cliBin, ['build', '--offline', '--until', 'kernel-source', ...common('e1', empty)]);
    expect(range.code).toBe(2);
    expect(range.stderr).toMatch(/^error: E_OFFLINE: --offline: kernel-source: kernel 6\.1 needs the mirror's listing for its exact version and sha256, and no build recorded it in this cache/m);
    const sha = await sha256File(DEBIAN_TARBALL);
    const pinned = await run(cliBin, ['build', '--offline', '--until', 'kernel-source', ...common('e2', empty), '--set', `kernel.version=${version}`, '--set', `kernel.sha256=${sha}`]);
    expect(pinned.code).toBe(2);
    expect(pinned.stderr).toContain(`error: E_OFFLINE: --offline: the download of kernel tarball linux-${version}.tar.xz needs the network from ${server.mirror}/v6.x/linux-${version}.tar.xz (build once with the network into this cache, or set kernel.source.tarball to a local file)`);
    expect(server.requests.length).toBe(before);
    const rootfs = await runWithoutNetwork(['build', '--offline', '--until', 'rootfs', ...common('e3', empty), '--set', 'rootfs.extraPackages=[less]']);
    expect(rootfs.code).toBe(2);
    expect(rootfs.stderr).toMatch(/^error: E_OFFLINE: --offline: the debian bookworm rootfs \(mmdebstrap\) needs the network from http\S+ \(build the rootfs once with the network into this cache, or set rootfs\.mirror to a file:\/\/ mirror\)$/m);
    const aptDir = join(dir, 'apt');
    mkdirSync(aptDir);
    const aptPipeline = writePipeline(aptDir, 'intel', '  version: "6.1"\n  source:\n    tarball: apt:linux-source-6.1\n');
    const apt = await runWithoutNetwork(['build', '--offline', '--until', 'kernel-source', '--pipeline', aptPipeline, '--cache-dir', empty, '--out-dir', join(dir, 'e4')]);
    expect(apt.code).toBe(2);
    expect(apt.stderr).toMatch(/^error: E_OFFLINE: --offline: apt-get download linux-source-6\.1=\S+ needs the network from http.* \(set kernel\.source\.tarball to the tarball linux-source-6\.1 installs under \/usr\/src\)$/m);
    expect(leakedMounts(empty)).toEqual([]);
  }, 300_000);

  it('refuses the options that are the network: --push, a remote cache (exit 2)', async () => {
    const push = await run(cliBin, ['build', '--offline', '--push', ...common('p')]);
    expect(push.code).toBe(2);
    expect(push.stderr).toMatch(/^error: E_USAGE: --offline and --push: a push needs the registry/m);
    const remote = await run(cliBin, ['build', '--offline', ...common('r')], { env: { GPU_GUEST_REMOTE_CACHE: 'http://user:secret@127.0.0.1:9/cache' } });
    expect(remote.code).toBe(2);
    expect(remote.stderr).toMatch(/^error: E_USAGE: --offline and a remote cache \(GPU_GUEST_REMOTE_CACHE http:\/\/\S+\): a remote cache is the network; drop one$/m);
    expect(remote.stderr).not.toContain('secret');
  });
});
