import { existsSync, mkdirSync, readFileSync, statSync } from 'node:fs';
import { linkOrCopy } from '../../sys/link.js';
import { join } from 'node:path';
import { GuestError } from '../../model/errors.js';
import { sha256File } from '../../sys/hash.js';
import { runLogged } from '../../sys/exec.js';
import { MEDIA, type Descriptor, type ImageLayout } from '../../sys/oci.js';
import type { StepContext } from '../../model/step.js';
import { parseOsRelease, type OsRelease } from './naming.js';

interface BaseImage {
  layers: Descriptor[];
  /** The os-release of the top-most layer that has one. */
  osRelease: Partial<OsRelease> | null;
  diffIds: string[];
  env: string[];
  history: object[];
}

/**
 * The user's own base image (RHEL-family bases cannot be debootstrapped): an OCI image layout
 * folder or an oci-archive. Its layers are copied into our layout after checking their digests.
 */
export async function readBaseImage(ctx: Pick<StepContext, 'log' | 'workDir' | 'signal'>, path: string, layout: ImageLayout): Promise<BaseImage> {
  let dir = path;
  if (statSync(path).isFile()) {
    dir = join(ctx.workDir, 'base-layout');
    mkdirSync(dir, { recursive: true });
    await runLogged(ctx.log, 'tar', ['-xf', path, '-C', dir], { signal: ctx.signal });
  }
  const fail = (why: string) => new GuestError('E_BASE_IMAGE', `vgpu.baseImage ${path}: ${why} (give an OCI image layout folder or an oci-archive, e.g. from skopeo copy … oci-archive:base.tar)`);
  if (!existsSync(join(dir, 'oci-layout')) || !existsSync(join(dir, 'index.json'))) throw fail('no oci-layout and index.json');
  const blob = (digest: string) => join(dir, 'blobs', ...digest.split(':'));
  const json = (digest: string) => JSON.parse(readFileSync(blob(digest), 'utf8'));
  const index = JSON.parse(readFileSync(join(dir, 'index.json'), 'utf8')) as { manifests?: Descriptor[] };
  const top = index.manifests?.[0];
  if (!top) throw fail('index.json lists no image');
  let manifest = json(top.digest);
  if (manifest.mediaType === MEDIA.index || manifest.manifests) {
    const amd64 = (manifest.manifests as (Descriptor & { platform?: { architecture?: string } })[]).find((m) => m.platform?.architecture === 'amd64');
    if (!amd64) throw fail('its index has no amd64 image');
    manifest = json(amd64.digest);
  }
  const config = json(manifest.config.digest);
  const layers: Descriptor[] = [];
  for (const layer of manifest.layers as Descriptor[]) {
    const from = blob(layer.digest);
    if (!existsSync(from)) throw fail(`layer ${layer.digest} is missing`);
    if (`sha256:${await sha256File(from)}` !== layer.digest) throw fail(`layer ${layer.digest} does not match its digest`);
    const to = layout.blobPath(layer.digest);
    linkOrCopy(from, to);
    layers.push({ mediaType: layer.mediaType, digest: layer.digest, size: layer.size });
  }
  return { layers, osRelease: await layersOsRelease(ctx, layers.map((l) => blob(l.digest))), diffIds: config.rootfs?.diff_ids ?? [], env: config.config?.Env ?? [], history: config.history ?? [] };
}

/**
 * /etc/os-release (or /usr/lib/os-release, where /etc's is a link) of an image: from the top-most
 * layer that holds one. tar reads gzip-compressed and plain layers alike.
 */
async function layersOsRelease(ctx: Pick<StepContext, 'log' | 'signal'>, layerFiles: string[]): Promise<Partial<OsRelease> | null> {
  for (const file of [...layerFiles].reverse()) {
    const listing = await runLogged(ctx.log, 'tar', ['-tvf', file], { capture: true, quiet: true, signal: ctx.signal });
    const entries = listing.split('\n').map((l) => /^(\S)\S* .*? ((?:\.\/)?(?:etc|usr\/lib)\/os-release)(?: -> .*)?$/.exec(l)).filter((m) => m !== null);
    const regular = entries.find((m) => m[1] === '-' && /etc\/os-release$/.test(m[2]!)) ?? entries.find((m) => m[1] === '-');
    if (!regular) continue;
    return parseOsRelease(await runLogged(ctx.log, 'tar', ['-xOf', file, regular[2]!], { capture: true, quiet: true, signal: ctx.signal }));
  }
  return null;
}
