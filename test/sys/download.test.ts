import { randomBytes, createHash } from 'node:crypto';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { downloadVerified } from '../../src/sys/download.js';
import { requireNetwork } from '../../src/sys/offline.js';
import { startKernelOrg, type KernelOrg } from '../fixtures/kernel-org.js';
import { testDir } from '../helpers.js';

let server: KernelOrg | undefined;
afterEach(async () => {
  await server?.close();
  server = undefined;
});

function payload(dir: string): { file: string; sha256: string } {
  const file = join(dir, 'linux-6.1.5.tar.xz');
  writeFileSync(file, randomBytes(6 * 1024 * 1024));
  return { file, sha256: createHash('sha256').update(readFileSync(file)).digest('hex') };
}

/** A URL on a port where nothing listens. */
async function deadUrl(): Promise<string> {
  const s = createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const port = (s.address() as { port: number }).port;
  await new Promise((r) => s.close(r));
  return `http://127.0.0.1:${port}/pub/linux/kernel`;
}

describe('downloadVerified', () => {
  it('resumes a connection dropped mid-download with a Range request', async () => {
    const dir = testDir();
    const { file, sha256 } = payload(dir);
    server = await startKernelOrg([{ path: 'v6.x/linux-6.1.5.tar.xz', file }]);
    server.dropNextAfter('v6.x/linux-6.1.5.tar.xz', 2 * 1024 * 1024);
    const progress: number[] = [];
    const logs: string[] = [];
    const dest = join(dir, 'dl', 'k.tar.xz');
    await downloadVerified({ urls: [`${server.mirror}/v6.x/linux-6.1.5.tar.xz`], dest, sha256, what: 'kernel tarball', onProgress: (d) => progress.push(d), log: (l) => logs.push(l) });
    const gets = server.requests.filter((r) => r.path.endsWith('.tar.xz'));
    expect(gets).toHaveLength(2);
    expect(gets[1]!.range).toMatch(/^bytes=\d+-$/);
    expect(Number(gets[1]!.range!.slice(6, -1))).toBeGreaterThan(0);
    expect(logs.join('\n')).toMatch(/resuming k\.tar\.xz at byte \d+/);
    expect(progress.at(-1)).toBe(6 * 1024 * 1024);
    expect(existsSync(`${dest}.part`)).toBe(false);
  });

  it('moves on to the next mirror when one is down', async () => {
    const dir = testDir();
    const { file, sha256 } = payload(dir);
    server = await startKernelOrg([{ path: 'v6.x/linux-6.1.5.tar.xz', file }]);
    const logs: string[] = [];
    await downloadVerified({ urls: [`${await deadUrl()}/v6.x/linux-6.1.5.tar.xz`, `${server.mirror}/v6.x/linux-6.1.5.tar.xz`], dest: join(dir, 'k'), sha256, what: 'kernel tarball', log: (l) => logs.push(l), attempts: 2 });
    expect(logs[0]).toMatch(/failed: ECONNREFUSED/);
  });

  it('deletes a download whose sha256 does not match and names both digests', async () => {
    const dir = testDir();
    const { file, sha256 } = payload(dir);
    server = await startKernelOrg([{ path: 'v6.x/linux-6.1.5.tar.xz', file }]);
    const dest = join(dir, 'k');
    const wrong = 'f'.repeat(64);
    await expect(downloadVerified({ urls: [`${server.mirror}/v6.x/linux-6.1.5.tar.xz`], dest, sha256: wrong, what: 'kernel tarball linux-6.1.5.tar.xz' })).rejects.toMatchObject({
      code: 'E_CHECKSUM_MISMATCH',
      message: expect.stringContaining(`kernel tarball linux-6.1.5.tar.xz: sha256 is ${sha256}, expected ${wrong}`),
    });
    expect(existsSync(dest)).toBe(false);
  });

  it('says 404 means no mirror has it', async () => {
    server = await startKernelOrg([]);
    await expect(downloadVerified({ urls: [`${server.mirror}/v6.x/linux-6.1.999.tar.xz`], dest: join(testDir(), 'k'), what: 'kernel tarball' })).rejects.toMatchObject({ code: 'E_NOT_FOUND', message: expect.stringContaining('no mirror has it') });
  });

  it('says plainly when no mirror can be reached at all', async () => {
    const err = await downloadVerified({ urls: [`${await deadUrl()}/x`, `${await deadUrl()}/y`], dest: join(testDir(), 'k'), what: 'kernel tarball', attempts: 2 }).catch((e) => e);
    expect(err.code).toBe('E_DOWNLOAD');
    expect(err.message).toContain('no mirror could be reached: check the network or proxy');
    expect(err.details).toHaveLength(2);
  });
});

describe('--offline (network: false)', () => {
  it('uses a file already downloaded with its sha256, and refuses a missing one with no request', async () => {
    const dir = testDir();
    const { file, sha256 } = payload(dir);
    server = await startKernelOrg([{ path: 'v6.x/linux-6.1.5.tar.xz', file }]);
    const url = `${server.mirror}/v6.x/linux-6.1.5.tar.xz`;
    const dest = join(dir, 'dl', 'k.tar.xz');
    const offline = { urls: [url], dest, sha256, what: 'kernel tarball linux-6.1.5.tar.xz', network: false, offlineFix: 'give a local file' };
    await expect(downloadVerified(offline)).rejects.toMatchObject({ code: 'E_OFFLINE', message: `--offline: the download of kernel tarball linux-6.1.5.tar.xz needs the network from ${url} (give a local file)` });
    expect(server.requests).toEqual([]);
    await downloadVerified({ ...offline, network: true });
    const asked = server.requests.length;
    await expect(downloadVerified(offline)).resolves.toBe(dest);
    expect(server.requests.length).toBe(asked);
  });

  it('lets local sources through (file:, copy:), and names only the remote ones, without their credentials', () => {
    expect(() => requireNetwork(false, 'the rootfs', ['file:///srv/debian', 'copy:///srv/debian'], 'fix')).not.toThrow();
    expect(() => requireNetwork(true, 'the rootfs', ['http://mirror.example/debian'], 'fix')).not.toThrow();
    expect(() => requireNetwork(false, 'the rootfs', ['file:///srv/debian', 'http://u:secret@mirror.example/debian'], 'fix')).toThrow(/^--offline: the rootfs needs the network from http:\/\/\*\*\*@mirror\.example\/debian \(fix\)$/);
    expect(() => requireNetwork(false, 'apt-get download x', [], 'fix')).toThrow(/^--offline: apt-get download x needs the network \(fix\)$/);
  });
});
