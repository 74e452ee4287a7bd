import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import { GuestError } from '../../model/errors.js';
import type { DriverResult, ImageResult, KernelPackagesResult, KernelSourceResult, RootfsTarballResult, SbomResult } from '../../model/results.js';
import type { StepContext, StepDefinition } from '../../model/step.js';
import { runLogged } from '../../sys/exec.js';
import { sha256File } from '../../sys/hash.js';
import { debianCopyrightLicense, debPurl, parseDpkgStatus, spdxId, type DpkgPackage } from '../../sys/spdx.js';
import { gpuGuestVersion } from '../../paths.js';

type SbomParams = { pipeline: string; distro: string; suite: string };
type SbomInputs = { image: ImageResult; rootfs: RootfsTarballResult; base?: RootfsTarballResult; kernel: KernelPackagesResult; source: KernelSourceResult; driver?: DriverResult };

/** NVIDIA's licence for its driver's user-mode parts and firmware (and its proprietary modules). */
const NVIDIA_LICENSE = 'LicenseRef-NVIDIA-Software-License';

/**
 * sbom: the guest's SPDX 2.3 document (sbom.spdx.json) — every package dpkg installed in the
 * rootfs the image was made from, with its version, purl and the licence its machine-readable
 * copyright file declares; the kernel (release, source and its sha256); NVIDIA's driver where it was
 * installed outside dpkg; and how they relate. Same inputs, same bytes (dates from the source date).
 */
export const sbom: StepDefinition<SbomParams, SbomInputs, SbomResult> = {
  kind: 'sbom',
  version: 1,
  resources: { cpu: 1 },
  publish: '.',
  run: (ctx) => writeSbom(ctx),
};

async function writeSbom(ctx: StepContext<SbomParams, SbomInputs>): Promise<SbomResult> {
  const { image, rootfs, kernel, source, driver } = ctx.upstream;
  const tarball = join(rootfs.dir, rootfs.result.tarball);
  const work = join(ctx.workDir, 'rootfs');
  mkdirSync(work, { recursive: true });
  await runLogged(ctx.log, 'tar', ['-xf', tarball, '-C', work, './var/lib/dpkg/status'], { signal: ctx.signal }).catch(() => {
    throw new GuestError('E_SBOM', `the guest rootfs ${basename(tarball)} has no /var/lib/dpkg/status: the SBOM lists what dpkg installed, and this rootfs has no dpkg database`);
  });
  // copyright files are optional (a package may have none; tar exits 2 when a pattern matched
  // nothing), from the guest's rootfs and, where a later task's cleanup removed them, the base's
  const docs = [work, ...(ctx.upstream.base ? [join(ctx.workDir, 'base')] : [])];
  const tarballs = [tarball, ...(ctx.upstream.base ? [join(ctx.upstream.base.dir, ctx.upstream.base.result.tarball)] : [])];
  for (const [i, t] of tarballs.entries()) {
    mkdirSync(docs[i]!, { recursive: true });
    await runLogged(ctx.log, 'tar', ['-xf', t, '-C', docs[i]!, '--wildcards', './usr/share/doc/*/copyright'], { signal: ctx.signal, okStatus: [0, 2] });
  }
  const installed = parseDpkgStatus(readFileSync(join(work, 'var/lib/dpkg/status'), 'utf8'));
  const licenseOf = (p: DpkgPackage): string | undefined => {
    for (const root of docs) {
      for (const dir of [p.name, p.source]) {
        const file = dir && join(root, 'usr/share/doc', dir, 'copyright');
        if (file && existsSync(file)) return debianCopyrightLicense(readFileSync(file, 'utf8'));
      }
    }
    return undefined;
  };

  const imageFile = join(image.dir, image.result.image);
  const imageSha = await sha256File(imageFile);
  const imageId = spdxId('image', basename(imageFile));
  const kernelId = spdxId('kernel', kernel.result.kernelRelease);
  const packages: object[] = [
    {
      SPDXID: imageId,
      name: basename(imageFile),
      packageFileName: basename(imageFile),
      downloadLocation: 'NOASSERTION',
      filesAnalyzed: false,
      checksums: [{ algorithm: 'SHA256', checksumValue: imageSha }],
      primaryPackagePurpose: 'OPERATING_SYSTEM',
      licenseConcluded: 'NOASSERTION',
      licenseDeclared: 'NOASSERTION',
      copyrightText: 'NOASSERTION',
      comment: `the ${image.result.format} guest image gpu-guest made for pipeline ${ctx.params.pipeline}`,
    },
    {
      SPDXID: kernelId,
      name: 'linux',
      versionInfo: kernel.result.kernelRelease,
      downloadLocation: /^https?:\/\//.test(source.result.origin) ? source.result.origin : 'NOASSERTION',
      filesAnalyzed: false,
      sourceInfo: `built from the Linux ${source.result.version} source (sha256 ${source.result.sha256}; ${source.result.origin})`,
      primaryPackagePurpose: 'OPERATING_SYSTEM',
      licenseConcluded: 'NOASSERTION',
      licenseDeclared: 'GPL-2.0-only WITH Linux-syscall-note',
      copyrightText: 'NOASSERTION',
    },
  ];
  const relationships: object[] = [
    { spdxElementId: 'SPDXRef-DOCUMENT', relationshipType: 'DESCRIBES', relatedSpdxElement: imageId },
    { spdxElementId: 'SPDXRef-DOCUMENT', relationshipType: 'DESCRIBES', relatedSpdxElement: kernelId },
  ];
  const refs = new Set<string>();
  let licensed = 0;
  for (const p of installed) {
    const id = spdxId('deb', p.name, p.architecture);
    const license = licenseOf(p);
    if (license) licensed++;
    for (const ref of license?.match(/LicenseRef-[A-Za-z0-9.-]+/g) ?? []) refs.add(ref);
    packages.push({
      SPDXID: id,
      name: p.name,
      versionInfo: p.version,
      downloadLocation: 'NOASSERTION',
      filesAnalyzed: false,
      ...(p.source ? { sourceInfo: `built from the Debian source package ${p.source}` } : {}),
      externalRefs: [{ referenceCategory: 'PACKAGE-MANAGER', referenceType: 'purl', referenceLocator: debPurl(p, ctx.params.suite) }],
      licenseConcluded: 'NOASSERTION',
      licenseDeclared: license ?? 'NOASSERTION',
      copyrightText: 'NOASSERTION',
    });
    relationships.push({ spdxElementId: imageId, relationshipType: 'CONTAINS', relatedSpdxElement: id });
  }
  // a driver installed from NVIDIA's .run (or built from source) is no dpkg package: listed on its own
  if (driver && driver.result.source !== 'apt') {
    const d = driver.result;
    const driverId = spdxId('nvidia-driver', d.driverVersion);
    refs.add(NVIDIA_LICENSE);
    packages.push({
      SPDXID: driverId,
      name: 'nvidia-driver',
      versionInfo: d.driverVersion,
      supplier: 'Organization: NVIDIA Corporation',
      downloadLocation: 'NOASSERTION',
      filesAnalyzed: false,
      sourceInfo: `NVIDIA's ${d.moduleType} kernel modules (${d.modules.map((m) => basename(m)).join(', ')}) built for ${d.kernelRelease}${d.source === 'source' ? ' from source on the build host' : ' by nvidia-installer'}, with its firmware and user-mode driver`,
      primaryPackagePurpose: 'LIBRARY',
      licenseConcluded: 'NOASSERTION',
      licenseDeclared: d.moduleType === 'open' ? `(MIT OR GPL-2.0-only) AND ${NVIDIA_LICENSE}` : NVIDIA_LICENSE,
      copyrightText: 'NOASSERTION',
    });
    relationships.push({ spdxElementId: imageId, relationshipType: 'CONTAINS', relatedSpdxElement: driverId });
    relationships.push({ spdxElementId: driverId, relationshipType: 'DEPENDS_ON', relatedSpdxElement: kernelId });
  }
  const extracted = [...refs].sort().map((licenseId) => ({
    licenseId,
    name: licenseId.replace(/^LicenseRef-/, ''),
    extractedText: licenseId === NVIDIA_LICENSE
      ? "NVIDIA's software license agreement, shipped in the driver package (its LICENSE file)"
      : 'The copyright file says the work is in the public domain.',
  }));
  const document = {
    spdxVersion: 'SPDX-2.3',
    dataLicense: 'CC0-1.0',
    SPDXID: 'SPDXRef-DOCUMENT',
    name: `${ctx.params.pipeline} guest`,
    documentNamespace: `urn:gpu-guest:sbom:${encodeURIComponent(ctx.params.pipeline)}:${imageSha}`,
    creationInfo: { created: new Date(ctx.sourceDate * 1000).toISOString().replace(/\.\d{3}Z$/, 'Z'), creators: [`Tool: gpu-guest-${gpuGuestVersion()}`] },
    documentDescribes: [imageId, kernelId],
    packages,
    relationships,
    ...(extracted.length ? { hasExtractedLicensingInfos: extracted } : {}),
  };
  writeFileSync(join(ctx.outDir, SBOM_FILE), `${JSON.stringify(document, null, 2)}\n`);
  ctx.log.info(`${installed.length} installed packages, ${licensed} with a licence their copyright file declares`);
  return { sbom: SBOM_FILE, packages: installed.length, licensed, distro: `${ctx.params.distro} ${ctx.params.suite}` };
}

const SBOM_FILE = 'sbom.spdx.json';
