import { execFileSync } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { sbom } from '../../src/steps/image/sbom.js';
import { debianCopyrightLicense, parseDpkgStatus } from '../../src/sys/spdx.js';
import { TaskLog } from '../../src/sys/task-log.js';
import type { StepContext } from '../../src/model/step.js';
import { testDir } from '../helpers.js';
import { spdxValidator } from '../fixtures/spdx.js';

const DEP5 = 'Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\nUpstream-Name: x\n\n';
const status = (name: string, version: string, state = 'install ok installed', source?: string) =>
  `Package: ${name}\nStatus: ${state}\nPriority: optional\n${source ? `Source: ${source}\n` : ''}Version: ${version}\nArchitecture: amd64\nDescription: ${name}\n multi-line\n`;

/** A rootfs tarball as the rootfs tasks pack it (./ names), with a dpkg status and copyright files. */
function guestRootfs(dir: string, withStatus = true, withDocs = true, name = 'rootfs'): string {
  const root = join(dir, `${name}-root`);
  mkdirSync(join(root, 'var/lib/dpkg'), { recursive: true });
  if (withStatus) {
    writeFileSync(join(root, 'var/lib/dpkg/status'), [status('bash', '5.2.15-2+b7'), status('libc6', '2.36-9+deb12u9', 'install ok installed', 'glibc'), status('removed-one', '1.0', 'deinstall ok config-files'), status('perl-base', '5.36.0-7+deb12u1', 'install ok installed', 'perl'), status('odd', '1:2.0~rc1')].join('\n'));
  }
  for (const [pkg, text] of Object.entries(withDocs ? {
    bash: `${DEP5}Files: *\nCopyright: 1987-2022 Free Software Foundation\nLicense: GPL-3+\n\nFiles: doc/*\nLicense: GFDL-NIV-1.3\n`,
    glibc: `${DEP5}Files: *\nCopyright: 1991 FSF\nLicense: LGPL-2.1+\n`,
    perl: `${DEP5}Files: *\nCopyright: Larry Wall\nLicense: GPL-1+ or Artistic\n`,
    odd: 'This is free software; see /usr/share/common-licenses/GPL-2.\n',
  } : {})) {
    mkdirSync(join(root, 'usr/share/doc', pkg), { recursive: true });
    writeFileSync(join(root, 'usr/share/doc', pkg, 'copyright'), text);
  }
  mkdirSync(join(root, 'usr/share/doc'), { recursive: true });
  const tarball = join(dir, `${name}.tar`);
  execFileSync('tar', ['-cf', tarball, '-C', root, '.']);
  return tarball;
}

function context(dir: string, tarball: string, driver?: object, base?: string): StepContext<never, never> {
  mkdirSync(join(dir, 'image/rootfs'), { recursive: true });
  writeFileSync(join(dir, 'image/rootfs/kata-containers-nvidia-gpu.img'), 'an image\n');
  const out = join(dir, 'out');
  mkdirSync(out, { recursive: true });
  return {
    task: { id: 'sbom', kind: 'sbom', upstream: {}, params: {}, files: {}, title: 'sbom' },
    key: 'f'.repeat(64),
    params: { pipeline: 'nvidia-test', distro: 'debian', suite: 'bookworm' },
    files: {},
    locations: {},
    outDir: out,
    workDir: join(dir, 'work'),
    upstream: {
      image: { dir: join(dir, 'image'), result: { image: 'rootfs/kata-containers-nvidia-gpu.img', format: 'ext4' } },
      rootfs: { dir, result: { tarball: basename(tarball) } },
      ...(base ? { base: { dir, result: { tarball: basename(base) } } } : {}),
      kernel: { dir, result: { kernelRelease: '6.1.192-nvidia-gpu', format: 'deb', packages: [] } },
      source: { dir, result: { version: '6.1.192', sha256: 'a'.repeat(64), origin: 'https://cdn.example/pub/linux/kernel/v6.x/linux-6.1.192.tar.xz', topDir: 'linux-6.1.192' } },
      ...(driver ? { driver: { dir, result: driver } } : {}),
    },
    log: new TaskLog(join(dir, 'task.log')),
    signal: new AbortController().signal,
    progress: () => undefined,
    cacheDir: join(dir, 'cache'),
    sourceDate: 1704067200,
    network: true,
  } as unknown as StepContext<never, never>;
}

describe('the guest SBOM (SPDX 2.3)', () => {
  it("reads dpkg's installed packages, and the licence of machine-readable copyright files only", () => {
    const installed = parseDpkgStatus([status('b', '1'), status('a', '2', 'install ok installed', 'a-src (1.0)'), status('c', '3', 'deinstall ok config-files')].join('\n'));
    expect(installed).toEqual([{ name: 'a', version: '2', architecture: 'amd64', source: 'a-src' }, { name: 'b', version: '1', architecture: 'amd64' }]);
    expect(debianCopyrightLicense(`${DEP5}Files: *\nLicense: GPL-2+\n`)).toBe('GPL-2.0-or-later');
    expect(debianCopyrightLicense(`${DEP5}Files: *\nLicense: GPL-1+ or Artistic\n`)).toBe('GPL-1.0-or-later OR Artistic-1.0-Perl');
    expect(debianCopyrightLicense(`${DEP5}Files: *\nLicense: LGPL-2.1+ and Expat\n`)).toBe('LGPL-2.1-or-later AND MIT');
    expect(debianCopyrightLicense(`${DEP5}Files: *\nLicense: Perl\n`)).toBe('Artistic-1.0-Perl OR GPL-1.0-or-later');
    expect(debianCopyrightLicense(`${DEP5}Files: *\nLicense: Perl and MIT\n`)).toBe('(Artistic-1.0-Perl OR GPL-1.0-or-later) AND MIT');
    // an exception, an unknown name, a free-form file: no guess
    expect(debianCopyrightLicense(`${DEP5}Files: *\nLicense: GPL-2+ with OpenSSL exception\n`)).toBeUndefined();
    expect(debianCopyrightLicense(`${DEP5}Files: *\nLicense: Sleepycat\n`)).toBeUndefined();
    expect(debianCopyrightLicense('GPL, see /usr/share/common-licenses\n')).toBeUndefined();
  });

  it('writes a document valid against the SPDX 2.3 schema, the same bytes twice, with every installed package and the driver', async () => {
    const dir = testDir();
    const tarball = guestRootfs(dir);
    const driver = { driverVersion: '535.261.03', moduleType: 'open', source: 'run', kernelRelease: '6.1.192-nvidia-gpu', modules: ['kernel/drivers/video/nvidia.ko', 'kernel/drivers/video/nvidia-uvm.ko'], tarball: 'x', label: 'x' };
    const result = await sbom.run(context(dir, tarball, driver));
    expect(result).toEqual({ sbom: 'sbom.spdx.json', packages: 4, licensed: 3, distro: 'debian bookworm' });
    const text = readFileSync(join(dir, 'out/sbom.spdx.json'), 'utf8');
    const doc = JSON.parse(text);
    expect(spdxValidator()(doc)).toEqual([]);
    // the schema bites: SPDX 2.3's JSON spells the purpose with an underscore
    expect(spdxValidator()({ ...doc, packages: [{ ...doc.packages[0], primaryPackagePurpose: 'OPERATING-SYSTEM' }] })).toEqual([expect.stringContaining('/packages/0/primaryPackagePurpose must be equal to one of the allowed values')]);
    expect(doc.creationInfo.created).toBe('2024-01-01T00:00:00Z');
    const byName = new Map(doc.packages.map((p: { name: string }) => [p.name, p]));
    expect([...byName.keys()].sort()).toEqual(['bash', 'kata-containers-nvidia-gpu.img', 'libc6', 'linux', 'nvidia-driver', 'odd', 'perl-base']);
    expect(byName.get('bash')).toMatchObject({ versionInfo: '5.2.15-2+b7', licenseDeclared: 'GPL-3.0-or-later', externalRefs: [{ referenceType: 'purl', referenceLocator: 'pkg:deb/debian/bash@5.2.15-2%2Bb7?arch=amd64&distro=bookworm' }] });
    // a library's doc folder is its source package's
    expect(byName.get('libc6')).toMatchObject({ licenseDeclared: 'LGPL-2.1-or-later', sourceInfo: 'built from the Debian source package glibc' });
    expect(byName.get('odd')).toMatchObject({ versionInfo: '1:2.0~rc1', licenseDeclared: 'NOASSERTION' });
    expect(byName.get('nvidia-driver')).toMatchObject({ versionInfo: '535.261.03', licenseDeclared: '(MIT OR GPL-2.0-only) AND LicenseRef-NVIDIA-Software-License' });
    expect(doc.hasExtractedLicensingInfos.map((l: { licenseId: string }) => l.licenseId)).toEqual(['LicenseRef-NVIDIA-Software-License']);
    expect(byName.get('linux')).toMatchObject({ versionInfo: '6.1.192-nvidia-gpu', licenseDeclared: 'GPL-2.0-only WITH Linux-syscall-note', downloadLocation: 'https://cdn.example/pub/linux/kernel/v6.x/linux-6.1.192.tar.xz' });
    // every element a relationship names exists; the image contains each package and the driver
    const ids = new Set(['SPDXRef-DOCUMENT', ...doc.packages.map((p: { SPDXID: string }) => p.SPDXID)]);
    for (const r of doc.relationships) expect(ids.has(r.spdxElementId) && ids.has(r.relatedSpdxElement), JSON.stringify(r)).toBe(true);
    expect(doc.relationships.filter((r: { relationshipType: string }) => r.relationshipType === 'CONTAINS')).toHaveLength(5);
    // reproducible: another run on the same inputs writes the same bytes
    const again = testDir();
    await sbom.run(context(again, guestRootfs(again), driver));
    expect(readFileSync(join(again, 'out/sbom.spdx.json'), 'utf8')).toBe(text);
  });

  it("takes the licences from the base rootfs when a later task's cleanup removed the copyright files", async () => {
    const dir = testDir();
    const guest = guestRootfs(dir, true, false, 'toolkit');
    const base = guestRootfs(dir, true, true, 'base');
    const result = await sbom.run(context(dir, guest, undefined, base));
    expect(result).toMatchObject({ packages: 4, licensed: 3 });
    const doc = JSON.parse(readFileSync(join(dir, 'out/sbom.spdx.json'), 'utf8'));
    expect(doc.packages.find((p: { name: string }) => p.name === 'bash').licenseDeclared).toBe('GPL-3.0-or-later');
    // without the base, nothing to read: NOASSERTION, never a guess
    const bare = testDir();
    expect(await sbom.run(context(bare, guestRootfs(bare, true, false)))).toMatchObject({ packages: 4, licensed: 0 });
  });

  it('refuses a rootfs without a dpkg database, naming it (E_SBOM)', async () => {
    const dir = testDir();
    await expect(sbom.run(context(dir, guestRootfs(dir, false)))).rejects.toMatchObject({ code: 'E_SBOM', message: expect.stringContaining('rootfs.tar has no /var/lib/dpkg/status') });
  });
});
