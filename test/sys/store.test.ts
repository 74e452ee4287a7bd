import { createHash } from 'node:crypto';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { fetchIntoStore, type StoreFile } from '../../src/sys/store.js';
import { testDir } from '../helpers.js';

const sha = (text: string) => createHash('sha256').update(text).digest('hex');
const bodies = Array.from({ length: 40 }, (_, i) => `package ${i}\n`.repeat(100));
let base: string;
let requests = 0;
const server = createServer((req, res) => {
  requests++;
  const i = Number(/\/p(\d+)\.deb$/.exec(req.url ?? '')?.[1]);
  if (!Number.isInteger(i) || !bodies[i]) return void res.writeHead(404).end();
  res.writeHead(200, { 'content-length': Buffer.byteLength(bodies[i]!) }).end(bodies[i]);
});
beforeAll(async () => {
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  base = `http://127.0.0.1:${(server.address() as { port: number }).port}`;
});
afterAll(() => new Promise<void>((r) => server.close(() => r())));

const files = (): StoreFile[] => bodies.map((b, i) => ({ path: `debs/${sha(b)}_p${i}.deb`, urls: [`${base}/pool/p${i}.deb`], sha256: sha(b), what: `p${i} 1.0` }));

describe('the cache store', () => {
  it('fetches many files on one signal without piling listeners on it, keeps what it has, and checks every sha256', async () => {
    const cache = testDir();
    const warnings: string[] = [];
    const onWarning = (w: Error) => warnings.push(w.name);
    process.on('warning', onWarning);
    try {
      const paths = await fetchIntoStore(cache, files(), { network: true, signal: new AbortController().signal, offlineFix: '' });
      expect(paths.map((p) => readFileSync(p, 'utf8'))).toEqual(bodies);
      const asked = requests;
      await fetchIntoStore(cache, files(), { network: false, offlineFix: '' });
      expect(requests).toBe(asked);
    } finally {
      process.off('warning', onWarning);
    }
    expect(warnings).not.toContain('MaxListenersExceededWarning');
  });

  it('without the network names what is missing at once; copies file: URLs; refuses bytes that differ from the pin', async () => {
    const cache = testDir();
    const before = requests;
    await expect(fetchIntoStore(cache, files(), { network: false, offlineFix: 'build from a bundle' })).rejects.toMatchObject({ code: 'E_OFFLINE', message: '--offline: 40 input(s) are not in this cache (p0 1.0, p1 1.0, p2 1.0, …); build from a bundle' });
    expect(requests).toBe(before);
    const local = join(testDir(), 'local.deb');
    writeFileSync(local, bodies[0]!);
    const [copied] = await fetchIntoStore(cache, [{ path: 'debs/x.deb', urls: [pathToFileURL(local).href], sha256: sha(bodies[0]!), what: 'local' }], { network: false, offlineFix: '' });
    expect(readFileSync(copied!, 'utf8')).toBe(bodies[0]);
    await expect(fetchIntoStore(cache, [{ ...files()[1]!, sha256: sha('other') }], { network: true, offlineFix: '' })).rejects.toMatchObject({ code: 'E_CHECKSUM_MISMATCH' });
    expect(existsSync(join(cache, `debs/${sha('other')}_p1.deb`))).toBe(false);
  });
});
