import { writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createSigningKey, DEBIAN_TARBALL, debianKernelVersion, makeNotAKernelTarball, startKernelOrg, type KernelOrg } from '../fixtures/kernel-org.js';
import { cliBin, run, testDir } from '../helpers.js';
import { sha256File } from '../../src/sys/hash.js';
import { writePipeline } from '../helpers.js';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';

let server: KernelOrg;
let keyring: string;
let fixtures: string;
const version = debianKernelVersion();

beforeAll(async () => {
  fixtures = mkdtempSync(join(tmpdir(), 'kernel-org-'));
  const key = createSigningKey(fixtures);
  keyring = key.keyring;
  const junk = makeNotAKernelTarball(fixtures, 'junk');
  server = await startKernelOrg(
    [
      { path: 'v6.x/linux-6.0.19.tar.xz' },
      { path: 'v6.x/linux-6.1.tar.xz' },
      { path: 'v6.x/linux-6.1.100.tar.xz' },
      { path: `v6.x/linux-${version}.tar.xz`, file: DEBIAN_TARBALL },
      { path: 'v6.x/linux-6.2-rc3.tar.xz' },
      { path: 'v6.x/linux-6.3.1.tar.xz', file: junk },
      { path: 'v6.x/linux-6.3.2.tar.xz', file: junk, sha256: 'e'.repeat(64) },
    ],
    { gnupgHome: key.home },
  );
});
afterAll(async () => {
  await server.close();
  rmSync(fixtures, { recursive: true, force: true });
});

const mirrors = (...urls: string[]) => `  source:\n    mirrors: [${urls.join(', ')}]\n`;

async function plan(kernel: string, extra: string[] = []) {
  const dir = testDir();
  const file = writePipeline(dir, 'intel', kernel);
  return run(cliBin, ['plan', '--resolve', '--json', '--pipeline', file, '--cache-dir', join(dir, 'cache'), ...extra]);
}

async function build(kernel: string) {
  const dir = testDir();
  const file = writePipeline(dir, 'intel', kernel);
  const r = await run(cliBin, ['build', '--until', 'kernel-source', '--pipeline', file, '--cache-dir', join(dir, 'cache'), '--out-dir', join(dir, 'out')]);
  return { ...r, dir };
}

const source = (r: { stdout: string }) => JSON.parse(r.stdout).tasks.find((t: { id: string }) => t.id === 'kernel-source').params;

describe('kernel-source resolution against a kernel.org-style mirror', () => {
  const ranges: [string, string][] = [
    ['6.1', version],
    ['~6.1.50', version],
    [`6.1.100`, '6.1.100'],
    ['6.0', '6.0.19'],
    ['>=6.1 <6.3', version],
    ['6.2', 'none'],
  ];
  it.each(ranges)('resolves %s to %s, never to a release candidate', async (spec, expected) => {
    const r = await plan(`  version: "${spec}"\n${mirrors(server.mirror)}`);
    if (expected === 'none') {
      expect(r.code).toBe(1);
      expect(r.stderr).toMatch(/E_NOT_FOUND: kernel 6\.2: no matching version in http:\/\/127\.0\.0\.1:\d+\/pub\/linux\/kernel\/v6\.x\//);
      return;
    }
    expect(r.code, r.stderr).toBe(0);
    expect(source(r)).toMatchObject({ resolvedVersion: expected, tarballName: `linux-${expected}.tar.xz` });
    expect(source(r).sha256).toMatch(/^[0-9a-f]{64}$/);
  });

  it('asks for a release candidate only when the range names one', async () => {
    const r = await plan(`  version: "6.2.0-rc3"\n${mirrors(server.mirror)}`);
    expect(source(r).resolvedVersion).toBe('6.2-rc3');
  });

  it('verifies the clearsigned sha256sums.asc with gpgv when a keyring is given, and rejects a foreign key', async () => {
    const ok = await plan(`  version: "6.1"\n  keyring: ${keyring}\n${mirrors(server.mirror)}`);
    expect(ok.code, ok.stderr).toBe(0);
    const other = createSigningKey(testDir());
    const bad = await plan(`  version: "6.1"\n  keyring: ${other.keyring}\n${mirrors(server.mirror)}`);
    expect(bad.code).toBe(1);
    expect(bad.stderr).toMatch(/E_SIGNATURE: sha256sums\.asc: signature does not verify against/);
  });

  it('keys the source by version and sha256, not by which mirror serves it', async () => {
    const a = await plan(`  version: "6.1"\n${mirrors(server.mirror)}`);
    const b = await plan(`  version: "6.1"\n${mirrors('http://127.0.0.1:9/pub/linux/kernel', server.mirror)}`);
    expect(JSON.parse(a.stdout).tasks[0].key).toBe(JSON.parse(b.stdout).tasks[0].key);
  });

  it('resolves Debian\'s source package from the host apt sources', async () => {
    const r = await plan('  version: "6.1"\n  source:\n    tarball: apt:linux-source-6.1\n');
    expect(r.code, r.stderr).toBe(0);
    expect(source(r).aptVersion).toMatch(/^6\.1\.\d+-/);
    const missing = await plan('  version: "6.1"\n  source:\n    tarball: apt:linux-source-9.9\n');
    expect(missing.stderr).toMatch(/E_NOT_FOUND: apt package linux-source-9\.9 is not in the host's apt sources/);
  });
});

describe('kernel-source bad inputs', () => {
  it('fails on a version the mirror does not have', async () => {
    const r = await plan(`  version: "6.1.999"\n${mirrors(server.mirror)}`);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/E_NOT_FOUND: kernel 6\.1\.999: linux-6\.1\.999\.tar\.xz is not listed in .*sha256sums\.asc \(no such version/);
  });

  it('fails on a checksum mismatch and deletes the download', async () => {
    const r = await build(`  version: "6.3.2"\n${mirrors(server.mirror)}`);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/E_CHECKSUM_MISMATCH: kernel tarball linux-6\.3\.2\.tar\.xz: sha256 is [0-9a-f]{64}, expected e{64}/);
  });

  it('plan without --resolve contacts no mirror: the task resolves at build time (E_NEEDS_NETWORK inside)', async () => {
    const dir = testDir();
    const file = writePipeline(dir, 'intel', `  version: "6.1"\n${mirrors(server.mirror)}`);
    const r = await run(cliBin, ['plan', '--json', '--pipeline', file, '--cache-dir', join(dir, 'cache')]);
    expect(r.code, r.stderr).toBe(0);
    const task = JSON.parse(r.stdout).tasks.find((t: { id: string }) => t.id === 'kernel-source');
    expect(task.params.resolvedVersion).toBeUndefined();
    expect(task.reasons).toContain("kernel 6.1 needs the mirror's listing for its exact version and sha256: resolved when the build runs (plan does not contact mirrors)");
    const { kernelSource } = await import('../../src/steps/kernel/kernel-source.js');
    const offline = { signal: new AbortController().signal, cacheDir: join(dir, 'cache'), network: false };
    await expect(kernelSource.resolve!({ version: '6.1', mirrors: [server.mirror] }, {}, offline)).rejects.toMatchObject({ code: 'E_NEEDS_NETWORK' });
  });

  it('a tarball holding another version than kernel.version asks for is E_VERSION_MISMATCH', async () => {
    const r = await build(`  version: "6.1.1"\n  sha256: ${await sha256File(DEBIAN_TARBALL)}\n  source:\n    tarball: ${DEBIAN_TARBALL}\n`);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(new RegExp(`E_VERSION_MISMATCH: .* holds Linux ${version.replace(/\./g, '\\.')}, but kernel\\.version asks for 6\\.1\\.1`));
  }, 300_000);

  it('fails on a tarball that is not a kernel tree', async () => {
    const r = await build(`  version: "6.3.1"\n${mirrors(server.mirror)}`);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/E_NOT_KERNEL_TREE: linux-6\.3\.1\.tar\.xz is not a Linux kernel source tarball/);
  });

  it('fails with a clear message when no mirror can be reached', async () => {
    const s = createServer();
    await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
    const port = (s.address() as { port: number }).port;
    await new Promise((r) => s.close(r));
    const r = await plan(`  version: "6.1"\n${mirrors(`http://127.0.0.1:${port}/pub/linux/kernel`)}`);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/E_DOWNLOAD: cannot fetch the kernel listing v6\.x\/ \(no mirror could be reached: check the network/);
  });

  it('requires a sha256 for a tarball URL', async () => {
    const r = await plan(`  version: "6.1"\n  source:\n    tarball: ${server.mirror}/v6.x/linux-6.3.1.tar.xz\n`);
    expect(r.stderr).toMatch(/is a URL: pin its kernel\.sha256/);
  });

  it('checks a local tarball against a pinned sha256 without deleting it', async () => {
    const dir = testDir();
    const junk = makeNotAKernelTarball(dir, 'local');
    const r = await build(`  version: "6.1"\n  sha256: ${'d'.repeat(64)}\n  source:\n    tarball: ${junk}\n`);
    expect(r.stderr).toMatch(/E_CHECKSUM_MISMATCH: kernel tarball local\.tar\.xz: sha256 is [0-9a-f]{64}, kernel\.sha256 says d{64}/);
    writeFileSync(join(dir, 'x'), '');
  });
});
