import { closeSync, openSync, readdirSync, readlinkSync, readSync } from 'node:fs';
import { basename, dirname, join, relative, resolve, sep } from 'node:path';
import { GuestError } from '../model/errors.js';

/** Compressed or plain tar, by the first bytes (what `tar -xf` will accept). */
const TAR_MAGIC: { name: string; at: number; bytes: number[] }[] = [
  { name: 'xz', at: 0, bytes: [0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00] },
  { name: 'gzip', at: 0, bytes: [0x1f, 0x8b] },
  { name: 'bzip2', at: 0, bytes: [0x42, 0x5a, 0x68] },
  { name: 'zstd', at: 0, bytes: [0x28, 0xb5, 0x2f, 0xfd] },
  { name: 'tar', at: 257, bytes: [0x75, 0x73, 0x74, 0x61, 0x72] },
];

/** Refuses a file that is not a (compressed) tar archive before anything extracts it. */
export function assertTarArchive(file: string, what: string): void {
  const fd = openSync(file, 'r');
  const head = Buffer.alloc(512);
  const n = readSync(fd, head, 0, head.length, 0);
  closeSync(fd);
  const known = TAR_MAGIC.some((m) => n >= m.at + m.bytes.length && m.bytes.every((b, i) => head[m.at + i] === b));
  if (!known) {
    const looks = /^[\x09\x0a\x0d\x20-\x7e]*$/.test(head.subarray(0, Math.min(n, 64)).toString('latin1')) ? 'it starts with text' : 'its first bytes are not xz, gzip, bzip2, zstd or tar';
    throw new GuestError('E_NOT_KERNEL_TREE', `${what} ${basename(file)} is not a tar archive (${looks}): check the file or the URL it came from`);
  }
}

/**
 * Symbolic links below root whose target resolves outside it, relative to root. GNU tar does not
 * write through such links while extracting, but anything reading the tree afterwards would.
 */
export function linksEscaping(root: string, rel = ''): string[] {
  const top = resolve(root);
  const out: string[] = [];
  for (const e of readdirSync(join(top, rel), { withFileTypes: true })) {
    const path = rel ? `${rel}/${e.name}` : e.name;
    if (e.isDirectory()) out.push(...linksEscaping(top, path));
    else if (e.isSymbolicLink()) {
      const target = resolve(dirname(join(top, path)), readlinkSync(join(top, path)));
      const inside = relative(top, target);
      if (inside === '..' || inside.startsWith(`..${sep}`)) out.push(`${path} -> ${readlinkSync(join(top, path))}`);
    }
  }
  return out;
}
