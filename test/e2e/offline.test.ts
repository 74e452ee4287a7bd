import { execFile } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DEBIAN_TARBALL, debianKernelVersion, startKernelOrg, type KernelOrg } from '../fixtures/kernel-org.js';
import { cliBin, leakedMounts, run, runWithoutNetwork, sharedCacheDir, suiteDir, writePipeline } from '../helpers.js';
import { sha256File } from '../../src/sys/hash.js';
import { aptShow } from '../../src/sys/apt.js';

const version = debianKernelVersion();
let server: KernelOrg;
let dir: string;
let cache: string;
let file: string;

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

/** name → version of a dpkg status file's installed packages. */
function statusPackages(status: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const stanza of status.split(/\n\n+/)) {
    const name = /^Package: (.+)$/m.exec(stanza)?.[1];
    const version = /^Version: (.+)$/m.exec(stanza)?.[1];
    if (name && version) out[name] = version;
  }
  return out;
}

describe('gpu-guest lock, fetch --bundle, build --offline --bundle', () => {
  // the shipped pipelines' kernel source (Debian's linux-source .deb) and the test rootfs; the
  // offline build starts from an empty cache, so the bundle alone must carry every remote input
  let aptPipeline: string;
  let lockFile: string;
  let bundle: string;
  let offlineCache: string;
  let lock: { tasks: Record<string, { resolved: Record<string, unknown> }> };
  const locked = (out: string, lockFile: string, c: string) => ['--pipeline', aptPipeline, '--cache-dir', c, '--out-dir', join(dir, out), '--lock', lockFile];
  const packagesOf = (l: typeof lock) => (l.tasks.rootfs!.resolved.locked as { packages: { name: string; version: string; sha256: string; filename: string }[] }).packages;

  it('lock pins the apt kernel source and the rootfs package set mmdebstrap would install, each .deb by sha256', async () => {
    const lockDir = join(dir, 'lock');
    mkdirSync(lockDir);
    aptPipeline = writePipeline(lockDir, 'intel', '  version: "6.1"\n  source:\n    tarball: apt:linux-source-6.1\n');
    lockFile = join(lockDir, 'intel-test.lock.json');
    const made = await run(cliBin, ['lock', '--pipeline', aptPipeline, '--cache-dir', sharedCacheDir(), '--lock', lockFile]);
    expect(made.code, made.stderr).toBe(0);
    expect(made.stdout).toMatch(/kernel-source +aptFilename "pool\/\S+\/linux-source-6\.1_\S+_all\.deb", aptVersion "\S+", sha256 [0-9a-f]{12}…/);
    expect(made.stdout).toMatch(/rootfs +\d+ packages pinned by sha256 \(InRelease [0-9a-f]{12}…\), mirror "http\S+"/);
    lock = JSON.parse(readFileSync(lockFile, 'utf8'));
    const host = await aptShow('linux-source-6.1');
    expect(lock.tasks['kernel-source']!.resolved).toMatchObject({ aptVersion: host.version, sha256: host.sha256, aptFilename: host.filename });
    const pinned = lock.tasks.rootfs!.resolved.locked as { release: { url: string; sha256: string } };
    expect(pinned.release.url).toMatch(/\/dists\/bookworm\/InRelease$/);
    expect(packagesOf(lock).map((p) => p.name)).toEqual(expect.arrayContaining(['kmod', 'busybox-static', 'libc6', 'apt', 'dpkg']));
    for (const p of packagesOf(lock)) expect(p).toMatchObject({ sha256: expect.stringMatching(/^[0-9a-f]{64}$/), filename: expect.stringMatching(/^pool\/.+\.deb$/) });
  }, 300_000);

  it('fetch --bundle carries every locked input; bundle verify names a damaged file; build --offline --bundle makes the kernel source and config and the locked rootfs in a network namespace from an empty cache, the second time from the bundle alone', async () => {
    bundle = join(dir, 'intel-test.bundle.tar');
    const fetched = await run(cliBin, ['fetch', '--pipeline', aptPipeline, '--cache-dir', sharedCacheDir(), '--lock', lockFile, '--bundle', bundle]);
    expect(fetched.code, fetched.stderr).toBe(0);
    expect(fetched.stdout).toMatch(new RegExp(`wrote \\S+intel-test\\.bundle\\.tar: \\d+ files, [\\d.]+ MiB \\(the pipeline pipeline/intel-test\\.yaml and its local inputs, the lock, 1 download\\(s\\), a Debian repository of ${packagesOf(lock).length} locked package\\(s\\)\\)`));
    const verified = await run(cliBin, ['bundle', 'verify', bundle, '--cache-dir', sharedCacheDir()]);
    expect(verified.code, verified.stderr).toBe(0);
    expect(verified.stdout).toMatch(/: \d+ files verified \([\d.]+ MiB\), pipeline intel-test, \d+ locked package\(s\), signatures good against the bundle's own key/);
    // the bundle's repository is a Debian repository apt's own tools accept: its InRelease verifies against the bundled key
    const listing = (await promisify(execFile)('tar', ['-tf', bundle])).stdout;
    expect(listing).toMatch(/^\.\/dists\/bookworm\/InRelease$/m);
    expect(listing).toMatch(/^\.\/pool\/main\/kmod_\S+_amd64\.deb$/m);
    // the pipeline, its paths pointing at the copies of its local inputs beside it (the shipped fragment)
    const carried = (await promisify(execFile)('tar', ['-xOf', bundle, './pipeline/intel-test.yaml'])).stdout;
    expect(carried).toMatch(/^ {4}- \.\/files\/01\/intel\.conf$/m);
    expect(listing).toMatch(/^\.\/pipeline\/files\/01\/intel\.conf$/m);

    // one byte changed in the middle of the bundle (inside one of its .debs)
    const damaged = join(dir, 'damaged.tar');
    const bytes = readFileSync(bundle);
    const at = bytes.length >> 1;
    bytes[at] = bytes[at]! ^ 0xff;
    writeFileSync(damaged, bytes);
    const bad = await run(cliBin, ['bundle', 'verify', damaged, '--cache-dir', sharedCacheDir()]);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/^error: E_BUNDLE_CORRUPT: \S+damaged\.tar is damaged: \S+: sha256 differs from the index's [0-9a-f]{12}…; fetch the bundle again$/m);
    offlineCache = join(dir, 'offline-cache');
    const refused = await runWithoutNetwork(['build', '--offline', '--bundle', damaged, '--until', 'image', '--pipeline', aptPipeline, '--cache-dir', offlineCache, '--out-dir', join(dir, 'damaged')]);
    expect(refused.code).toBe(2);
    expect(refused.stderr).toMatch(/^error: E_BUNDLE_CORRUPT: /m);
    expect(existsSync(join(offlineCache, 'debs'))).toBe(false);

    // the pipeline named as when it was fetched; then the bundle alone, with the pipeline it carries
    // the kernel path up to the merged .config (kernel-build is make on that tree: no input from anywhere)
    for (const [until, pipeline] of [['kernel-config', ['--pipeline', aptPipeline]], ['image', []]] as const) {
      const built = await runWithoutNetwork(['build', '--offline', '--bundle', bundle, '--until', until, '--progress', 'plain', ...pipeline, '--cache-dir', offlineCache, '--out-dir', join(dir, 'bundled')]);
      expect(built.code, `${built.stdout}\n${built.stderr}`).toBe(0);
      expect(built.stderr).toMatch(/^bundle \S+: \d+ files verified, signatures good against the bundle's own key \(--trusted-key checks who made it\), \d+ put into the cache$/m);
    }
    // the manifest names what the build was made from: the pipeline (here the bundle's) and the bundle's lock, by sha256
    const manifest = JSON.parse(readFileSync(join(dir, 'bundled/intel-test/manifest.json'), 'utf8'));
    expect(manifest.pipelineFile).toEqual({ path: `${bundle}:pipeline/intel-test.yaml`, sha256: expect.stringMatching(/^[0-9a-f]{64}$/) });
    expect(manifest.lock).toEqual({ sha256: expect.stringMatching(/^[0-9a-f]{64}$/), bundle: bundle });
    const plan = JSON.parse((await run(cliBin, ['plan', '--json', ...locked('plan', lockFile, offlineCache)])).stdout) as { tasks: { id: string; key: string; status: string; reasons: string[] }[] };
    const rootfs = plan.tasks.find((t) => t.id === 'rootfs')!;
    expect(rootfs).toMatchObject({ status: 'cached', reasons: ['resolved from the lock'] });
    expect(plan.tasks.find((t) => t.id === 'kernel-source')).toMatchObject({ status: 'cached' });
    expect(plan.tasks.find((t) => t.id === 'kernel-config')).toMatchObject({ status: 'cached' });
    const tarball = join(offlineCache, 'entries', rootfs.key, 'out/rootfs.tar');
    const tar = promisify(execFile);
    const status = (await tar('tar', ['-xOf', tarball, './var/lib/dpkg/status'], { maxBuffer: 64 << 20 })).stdout;
    expect(statusPackages(status)).toEqual(Object.fromEntries(packagesOf(lock).map((p) => [p.name, p.version])));
    // the guest names the real mirror, as an unlocked build's does, not the build's scratch repository
    expect((await tar('tar', ['-xOf', tarball, './etc/apt/sources.list'])).stdout).toMatch(/^deb http\S+ bookworm main\n$/);
    expect(leakedMounts(offlineCache)).toEqual([]);
  }, 900_000);

  it('without the network: plan takes the lock\'s resolutions; a locked .deb not in the cache is E_OFFLINE; one whose bytes differ from the lock is refused', async () => {
    const plan = await runWithoutNetwork(['plan', ...locked('p', lockFile, offlineCache)]);
    expect(plan.code, plan.stderr).toBe(0);
    expect(plan.stdout).toMatch(/^cached kernel-source[^\n]*\n(?: {9}.*\n)*? {9}why: resolved from the lock$/m);
    expect(plan.stdout).toMatch(/^cached rootfs[^\n]*\n(?: {9}.*\n)*? {9}why: resolved from the lock$/m);
    const empty = join(dir, 'empty-debs');
    const offline = await runWithoutNetwork(['build', '--offline', '--only', 'rootfs', ...locked('o', lockFile, empty)]);
    expect(offline.code).toBe(2);
    expect(offline.stderr).toMatch(/^error: E_OFFLINE: --offline: \d+ input\(s\) are not in this cache \(\S+ \S+ \(pool\/\S+\), .*, …\); build once with the network into this cache, or build from a bundle \(`build --bundle`\)$/m);
    expect(leakedMounts(empty)).toEqual([]);
    // one .deb's sha256 altered: the lock still matches the pipeline, and the mirror's file is refused
    const tampered = JSON.parse(readFileSync(lockFile, 'utf8'));
    const kmod = tampered.tasks.rootfs.resolved.locked.packages.find((p: { name: string }) => p.name === 'kmod');
    kmod.sha256 = 'f'.repeat(64);
    const tamperedFile = join(dir, 'tampered.lock.json');
    writeFileSync(tamperedFile, JSON.stringify(tampered));
    const refused = await run(cliBin, ['build', '--only', 'rootfs', ...locked('t', tamperedFile, empty)]);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toMatch(new RegExp(`E_CHECKSUM_MISMATCH: .*kmod ${kmod.version.replace(/[.+]/g, '\\$&')}`));
    expect(existsSync(join(empty, 'debs', `${'f'.repeat(64)}_${kmod.filename.split('/').pop()}`))).toBe(false);
  }, 300_000);

  it('refuses a lock the pipeline no longer matches, naming each change, before anything is made; --update-lock refreshes it', async () => {
    const changed = ['--set', 'rootfs.packages=[less]', '--set', 'kernel.version=6.1.192'];
    const refused = await run(cliBin, ['build', ...locked('m', lockFile, offlineCache), ...changed]);
    expect(refused.code).toBe(2);
    expect(refused.stderr).toMatch(/^error: E_LOCK_MISMATCH: \S+intel-test\.lock\.json does not match the pipeline: kernel-source version: locked "6\.1", now "6\.1\.192" \(and 1 more\); refresh it with --update-lock or `gpu-guest lock`$/m);
    expect(refused.stderr).toContain('  rootfs packages: added "less"');
    expect(existsSync(join(dir, 'm'))).toBe(false);
    const bundled = await run(cliBin, ['build', '--offline', '--bundle', bundle, ...locked('m', lockFile, offlineCache), ...changed]);
    expect(bundled.stderr).toMatch(/^error: E_USAGE: --bundle \S+ carries its own lock: drop --lock$/m);
    const noLock = await run(cliBin, ['build', '--update-lock', '--pipeline', aptPipeline, '--cache-dir', offlineCache]);
    expect(noLock.stderr).toMatch(/^error: E_USAGE: --update-lock: name the lock to refresh with --lock FILE$/m);
    const other = join(dir, 'other.lock.json');
    writeFileSync(other, readFileSync(lockFile));
    const offline = await run(cliBin, ['build', '--offline', '--update-lock', ...locked('u', other, offlineCache)]);
    expect(offline.stderr).toMatch(/^error: E_USAGE: --offline and --update-lock: /m);
    // the kernel source as locked (cached by the bundled build); the rootfs gains a package
    const updated = await run(cliBin, ['build', '--update-lock', '--until', 'kernel-source', ...locked('u', other, offlineCache), '--set', 'rootfs.packages=[less]']);
    expect(updated.code, updated.stderr).toBe(0);
    expect(updated.stdout).toMatch(/cached kernel-source/);
    const now = JSON.parse(readFileSync(other, 'utf8'));
    expect(now.tasks.rootfs.declared.packages).toEqual(['less']);
    expect(now.tasks.rootfs.resolved.locked.packages.map((p: { name: string }) => p.name)).toContain('less');
    expect(now.tasks['kernel-source'].resolved).toEqual(lock.tasks['kernel-source']!.resolved);
    const broken = join(dir, 'broken.lock.json');
    writeFileSync(broken, '{');
    const invalid = await run(cliBin, ['build', ...locked('b', broken, offlineCache)]);
    expect(invalid.code).toBe(2);
    expect(invalid.stderr).toMatch(/^error: E_LOCK_INVALID: \S+broken\.lock\.json: not a gpu-guest lock/m);
  }, 300_000);
});
