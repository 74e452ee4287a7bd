import { createHash } from 'node:crypto';
import { createReadStream, createWriteStream, mkdirSync, renameSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { createGzip } from 'node:zlib';
import { canonicalJson } from '../model/json.js';
import type { Json } from '../model/json.js';

export const MEDIA = {
  manifest: 'application/vnd.oci.image.manifest.v1+json',
  index: 'application/vnd.oci.image.index.v1+json',
  config: 'application/vnd.oci.image.config.v1+json',
  layerGzip: 'application/vnd.oci.image.layer.v1.tar+gzip',
} as const;

export interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
  annotations?: Record<string, string>;
}

/** An OCI image layout being written: oci-layout, index.json, blobs/sha256/<digest>. */
export class ImageLayout {
  constructor(readonly dir: string) {
    mkdirSync(join(dir, 'blobs', 'sha256'), { recursive: true });
    writeFileSync(join(dir, 'oci-layout'), '{"imageLayoutVersion":"1.0.0"}');
  }

  blobPath(digest: string): string {
    return join(this.dir, 'blobs', 'sha256', digest.replace(/^sha256:/, ''));
  }

  /** Stores bytes as a blob; returns its descriptor. */
  addBlob(mediaType: string, bytes: Buffer): Descriptor {
    const hex = createHash('sha256').update(bytes).digest('hex');
    writeFileSync(this.blobPath(hex), bytes);
    return { mediaType, digest: `sha256:${hex}`, size: bytes.length };
  }

  /** Canonical JSON (sorted keys, no spaces): the same content always has the same digest. */
  addJson(mediaType: string, value: Json): Descriptor {
    return this.addBlob(mediaType, Buffer.from(canonicalJson(value)));
  }

  /**
   * gzip's a layer tarball (no name, no timestamp in the gzip header) into a blob; returns the
   * blob's descriptor and the diff_id (digest of the uncompressed tar) the config lists.
   */
  async addLayer(tarball: string): Promise<{ descriptor: Descriptor; diffId: string }> {
    const tmp = join(this.dir, 'blobs', `.layer-${process.pid}.tmp`);
    const blobHash = createHash('sha256');
    const diffHash = createHash('sha256');
    let size = 0;
    await pipeline(
      createReadStream(tarball).on('data', (c) => diffHash.update(c as Buffer)),
      createGzip({ level: 6 }),
      async function* (source) {
        for await (const chunk of source) {
          blobHash.update(chunk as Buffer);
          size += (chunk as Buffer).length;
          yield chunk;
        }
      },
      createWriteStream(tmp),
    );
    const hex = blobHash.digest('hex');
    renameSync(tmp, this.blobPath(hex));
    return { descriptor: { mediaType: MEDIA.layerGzip, digest: `sha256:${hex}`, size }, diffId: `sha256:${diffHash.digest('hex')}` };
  }

  /** Writes index.json naming one manifest, tagged with org.opencontainers.image.ref.name. */
  writeIndex(manifest: Descriptor, refName: string): void {
    const index = { schemaVersion: 2, mediaType: MEDIA.index, manifests: [{ ...manifest, annotations: { 'org.opencontainers.image.ref.name': refName } }] };
    writeFileSync(join(this.dir, 'index.json'), canonicalJson(index as unknown as Json));
  }
}

/** Size of a file, for descriptors of blobs written elsewhere. */
export function fileSize(path: string): number {
  return statSync(path).size;
}
