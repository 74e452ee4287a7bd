import { createHash } from 'node:crypto';
import { mkdirSync, readFileSync, renameSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { instLines, PrivateApt } from '../../src/sys/apt-private.js';
import { startAptRepo, type AptRepo } from '../fixtures/apt-repo.js';
import { buildToolkitDebs } from '../fixtures/toolkit.js';
import { testDir } from '../helpers.js';

// Two signed repositories on 127.0.0.1, as a driver's own repository beside the distribution's:
// the toolkit's libraries in one, nvidia-container-toolkit (which needs them) in the other.
const V = '1.17.3-1';
let libs: AptRepo;
let tools: AptRepo;
let dir: string;

beforeAll(async () => {
  dir = testDir();
  const debs = buildToolkitDebs(dir, V);
  mkdirSync(join(dir, 'b/debs'), { recursive: true });
  renameSync(join(debs, `nvidia-container-toolkit_${V}_amd64.deb`), join(dir, 'b/debs', `nvidia-container-toolkit_${V}_amd64.deb`));
  mkdirSync(join(dir, 'a'));
  libs = await startAptRepo(join(dir, 'a'), debs);
  tools = await startAptRepo(join(dir, 'b'), join(dir, 'b/debs'));
});
afterAll(async () => {
  await libs?.close();
  await tools?.close();
});

const sources = () => [
  { mirror: tools.url, suite: 'stable', components: ['main'], keyring: tools.keyring },
  { mirror: libs.url, suite: 'stable', components: ['main'], keyring: libs.keyring },
];

describe('apt with a state of its own', () => {
  it('answers what installing a package adds, from several repositories, each .deb pinned with the repository it comes from', async () => {
    const apt = await PrivateApt.update(sources());
    try {
      const added = await apt.simulateInstall([`nvidia-container-toolkit=${V}`]);
      expect(added.map((p) => p.name).sort()).toEqual(['libnvidia-container-tools', 'libnvidia-container1', 'nvidia-container-toolkit', 'nvidia-container-toolkit-base']);
      const pinned = await apt.pin(added);
      const from = Object.fromEntries(pinned.map((p) => [p.name, p.mirror]));
      expect(from['nvidia-container-toolkit']).toBe(tools.url.replace(/\/$/, ''));
      expect(from['libnvidia-container1']).toBe(libs.url.replace(/\/$/, ''));
      for (const p of pinned) {
        const file = join(dir, p.name === 'nvidia-container-toolkit' ? 'b' : 'a', 'repo', p.filename);
        expect(p.sha256).toBe(createHash('sha256').update(readFileSync(file)).digest('hex'));
      }
      // every repository's signed InRelease, in the order given
      expect(apt.releases()).toEqual([tools, libs].map((r) => ({ url: `${r.url.replace(/\/$/, '')}/dists/stable/InRelease`, sha256: createHash('sha256').update(readFileSync(join(dir, r === tools ? 'b' : 'a', 'repo/dists/stable/InRelease'))).digest('hex') })));

      // with the libraries installed, only the rest is added
      apt.setInstalled([...(await apt.show([{ name: 'libnvidia-container1', version: V }, { name: 'libnvidia-container-tools', version: V }])).values()]);
      expect((await apt.simulateInstall([`nvidia-container-toolkit=${V}`])).map((p) => p.name).sort()).toEqual(['nvidia-container-toolkit', 'nvidia-container-toolkit-base']);
      await expect(apt.show([{ name: 'nvidia-container-toolkit', version: '9.9' }])).rejects.toThrow(/nvidia-container-toolkit 9\.9 is not in http:\/\/127\.0\.0\.1:\d+\/ stable and http:\/\/127\.0\.0\.1:\d+\/ stable/);
      await expect(apt.simulateInstall(['no-such-package'])).rejects.toThrow(/E_DOWNLOAD|Unable to locate package no-such-package/);
    } finally {
      apt.dispose();
    }
  });

  it("reads apt's Inst lines: upgrades, architectures, and one version per package", () => {
    const text = ['Inst libelf1 (0.188-2.1 Debian:12/stable [amd64])', 'Inst libc6 [2.36-9] (2.36-9+deb12u1 Debian:12/stable [amd64])', 'Inst gcc:amd64 (4:12.2.0-3 Debian:12/stable [amd64])', 'Conf libelf1 (0.188-2.1 Debian:12/stable [amd64])'].join('\n');
    expect(instLines(text)).toEqual([
      { name: 'libelf1', version: '0.188-2.1' },
      { name: 'libc6', version: '2.36-9+deb12u1' },
      { name: 'gcc', version: '4:12.2.0-3' },
    ]);
    expect(() => instLines('Inst a (1 x [all])\nInst a (2 x [all])')).toThrow(/apt chose a in two versions \(1, 2\)/);
  });
});
