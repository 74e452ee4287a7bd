import { createHash } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { downloadVerified, fetchText } from '../../src/sys/download.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { proxyEnvironment, proxyFor } from '../../src/sys/proxy.js';
import { hostMirror } from '../../src/sys/apt-sources.js';
import { DEBIAN_TARBALL, debianKernelVersion, startKernelOrg, type KernelOrg } from '../fixtures/kernel-org.js';
import { startForwardProxy, type ForwardProxy } from '../fixtures/proxy.js';
import { cliBin, leakedMounts, run, testDir, writePipeline } from '../helpers.js';

describe('which requests go through the proxy', () => {
  const env = { HTTP_PROXY: 'http://proxy:3128', https_proxy: 'http://tls-proxy:3128' };
  it('HTTP_PROXY for http, HTTPS_PROXY for https, the lower-case spelling first', () => {
    expect(proxyFor('http://deb.example/debian', env)).toBe('http://proxy:3128');
    expect(proxyFor('https://deb.example/debian', env)).toBe('http://tls-proxy:3128');
    expect(proxyFor('http://deb.example/', { ...env, http_proxy: 'http://lower:1' })).toBe('http://lower:1');
    expect(proxyFor('http://deb.example/', {})).toBeUndefined();
    expect(proxyFor('http://deb.example/', { HTTP_PROXY: ' ' })).toBeUndefined();
    // an empty lower-case variable does not hide the upper-case one
    expect(proxyFor('http://deb.example/', { http_proxy: '', HTTP_PROXY: 'http://upper:2' })).toBe('http://upper:2');
  });

  it('none for the hosts NO_PROXY names: *, a host, a domain and its subdomains, a host:port, an IP', () => {
    const no = (list: string, url: string) => proxyFor(url, { ...env, NO_PROXY: list });
    expect(no('*', 'http://a.example/')).toBeUndefined();
    expect(no('example.com', 'http://mirror.example.com/')).toBeUndefined();
    expect(no('.example.com', 'http://example.com/')).toBeUndefined();
    expect(no('example.com', 'http://notexample.com/')).toBe('http://proxy:3128');
    expect(no('127.0.0.1', 'http://127.0.0.1:8080/x')).toBeUndefined();
    expect(no('registry.local:5000', 'https://registry.local:5000/v2/')).toBeUndefined();
    expect(no('registry.local:5000', 'https://registry.local/v2/')).toBe('http://tls-proxy:3128');
    expect(no(' , localhost ,', 'http://localhost/')).toBeUndefined();
  });

  it('hands the proxy variables, and only those, to commands that read them (apt in a chroot)', () => {
    expect(proxyEnvironment({ HTTP_PROXY: 'http://p:1', NO_PROXY: 'x', PATH: '/bin' })).toEqual({ http_proxy: 'http://p:1', HTTP_PROXY: 'http://p:1', no_proxy: 'x', NO_PROXY: 'x' });
  });
});

describe('builds behind a proxy on 127.0.0.1', () => {
  let proxy: ForwardProxy;
  let server: KernelOrg;
  const version = debianKernelVersion();
  beforeAll(async () => {
    proxy = await startForwardProxy();
    server = await startKernelOrg([{ path: `v6.x/linux-${version}.tar.xz`, file: DEBIAN_TARBALL }]);
  });
  afterAll(async () => {
    await server?.close();
    await proxy?.close();
  });
  const build = async (until: string, env: NodeJS.ProcessEnv) => {
    const dir = testDir();
    const file = writePipeline(dir, 'intel', `  version: "6.1"\n  source:\n    mirrors: [${server.mirror}]\n`);
    const r = await run(cliBin, ['build', '--until', until, '--pipeline', file, '--cache-dir', join(dir, 'cache'), '--out-dir', join(dir, 'out')], { env: { http_proxy: '', https_proxy: '', no_proxy: '', ...env } });
    return { ...r, cache: join(dir, 'cache') };
  };

  it('downloads and fetches through HTTP_PROXY, resuming there too, and straight from a host NO_PROXY names', async () => {
    const dir = testDir();
    const file = join(dir, 'payload.bin');
    writeFileSync(file, Buffer.alloc(3 << 20, 7));
    const sha256 = createHash('sha256').update(readFileSync(file)).digest('hex');
    const files = await startKernelOrg([{ path: 'v6.x/payload.bin', file }]);
    const saved = { HTTP_PROXY: process.env.HTTP_PROXY, http_proxy: process.env.http_proxy, NO_PROXY: process.env.NO_PROXY, no_proxy: process.env.no_proxy };
    try {
      Object.assign(process.env, { HTTP_PROXY: proxy.url, http_proxy: '', NO_PROXY: '', no_proxy: '' });
      proxy.requests.length = 0;
      // the server drops the first answer half-way: the resumed request goes through the proxy as well
      files.dropNextAfter('v6.x/payload.bin', 1 << 20);
      await downloadVerified({ urls: [`${files.mirror}/v6.x/payload.bin`], dest: join(dir, 'a.bin'), sha256, what: 'payload' });
      await fetchText([`${files.mirror}/v6.x/sha256sums.asc`], 'sums');
      expect(proxy.requests.filter((q) => q.endsWith('/payload.bin'))).toEqual([`GET ${files.mirror}/v6.x/payload.bin`, `GET ${files.mirror}/v6.x/payload.bin`]);
      expect(files.requests.filter((q) => q.path.endsWith('/payload.bin')).map((q) => q.range ?? 'whole')).toEqual(['whole', `bytes=${1 << 20}-`]);
      expect(proxy.requests).toContain(`GET ${files.mirror}/v6.x/sha256sums.asc`);
      proxy.requests.length = 0;
      process.env.NO_PROXY = '127.0.0.1';
      await downloadVerified({ urls: [`${files.mirror}/v6.x/payload.bin`], dest: join(dir, 'b.bin'), sha256, what: 'payload' });
      expect(proxy.requests).toEqual([]);
    } finally {
      for (const [k, v] of Object.entries(saved)) if (v === undefined) delete process.env[k]; else process.env[k] = v;
      await files.close();
    }
  });

  it('a proxy that is down is named in the download error, without its password', async () => {
    const r = await build('kernel-source', { HTTP_PROXY: 'http://builder:s3cret@127.0.0.1:9', NO_PROXY: '' });
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^error: E_DOWNLOAD: cannot (download|fetch) .*\(no mirror could be reached: check the network/m);
    expect(r.stderr).toMatch(/(sha256sums\.asc|v6\.x\/) \(through proxy http:\/\/\S*127\.0\.0\.1:9\): ECONNREFUSED/);
    // the proxy's password never reaches the terminal
    expect(r.stderr).not.toContain('s3cret');
  }, 300_000);

  it("mmdebstrap's apt reaches the Debian mirror through the proxy", async () => {
    proxy.requests.length = 0;
    const r = await build('rootfs', { http_proxy: proxy.url, NO_PROXY: '' });
    expect(r.code, r.stderr).toBe(0);
    const mirror = hostMirror('debian').replace(/\/$/, '');
    expect(proxy.requests.some((q) => q.startsWith(`GET ${mirror}/dists/bookworm/`)), proxy.requests.slice(0, 5).join('\n')).toBe(true);
    expect(proxy.requests.some((q) => /^GET \S+\.deb$/.test(q))).toBe(true);
    expect(leakedMounts(r.cache)).toEqual([]);
  }, 600_000);
});
