import { createHash } from 'node:crypto';
import { existsSync, readFileSync, renameSync, statSync, writeFileSync, readdirSync } from 'node:fs';
import { basename, join } from 'node:path';
import { GuestError } from '../model/errors.js';
import type { Json } from '../model/json.js';
import { sha256File } from '../sys/hash.js';

/**
 * Content digests of input files, remembered by (path, size, mtime, inode) in a file under the
 * cache, so that an unchanged 140 MB tarball is not re-read on every plan.
 */
export class DigestMemo {
  private entries: Record<string, string> = {};
  private dirty = false;

  constructor(
    private readonly file?: string,
    private readonly options: { readOnly?: boolean } = {},
  ) {
    if (file && existsSync(file)) {
      try {
        this.entries = JSON.parse(readFileSync(file, 'utf8')) as Record<string, string>;
      } catch {
        this.entries = {};
      }
    }
  }

  async file_(path: string): Promise<string> {
    const st = statSync(path);
    const id = `${path}\0${st.size}\0${st.mtimeMs}\0${st.ino}`;
    const known = this.entries[id];
    if (known) return known;
    const digest = await sha256File(path);
    this.entries[id] = digest;
    this.dirty = true;
    return digest;
  }

  /** A file's digest, or for a folder the digest of its sorted (relative path, mode, digest) list. */
  async path(path: string): Promise<string> {
    if (!existsSync(path)) throw new GuestError('E_INPUT_NOT_FOUND', `input ${path} does not exist (fix the pipeline path or restore the file)`);
    const st = statSync(path);
    if (!st.isDirectory()) return this.file_(path);
    const lines: string[] = [];
    for (const rel of listFiles(path)) {
      const full = join(path, rel);
      const mode = statSync(full).mode & 0o111 ? 'x' : '-';
      lines.push(`${rel}\0${mode}\0${await this.file_(full)}\n`);
    }
    return createHash('sha256').update(lines.join('')).digest('hex');
  }

  /** Digests for a task's input roles: file names and content, never machine paths. */
  async inputs(files: { [role: string]: string | string[] }): Promise<{ [role: string]: Json }> {
    const out: { [role: string]: Json } = {};
    for (const role of Object.keys(files).sort()) {
      const value = files[role]!;
      const one = async (p: string): Promise<Json> => ({ name: basename(p), sha256: await this.path(p) });
      out[role] = Array.isArray(value) ? await Promise.all(value.map(one)) : await one(value);
    }
    return out;
  }

  save(): void {
    if (!this.file || !this.dirty || this.options.readOnly) return;
    const tmp = `${this.file}.${process.pid}.tmp`;
    try {
      writeFileSync(tmp, JSON.stringify(this.entries));
      renameSync(tmp, this.file);
      this.dirty = false;
    } catch {
      // The memo only saves time; a cache that cannot take it is reported elsewhere.
    }
  }
}

/** Relative paths of every regular file under a folder, sorted, following no symlinks. */
export function listFiles(root: string, prefix = ''): string[] {
  const out: string[] = [];
  for (const entry of readdirSync(join(root, prefix), { withFileTypes: true }).sort((a, b) => (a.name < b.name ? -1 : 1))) {
    const rel = prefix ? `${prefix}/${entry.name}` : entry.name;
    if (entry.isDirectory()) out.push(...listFiles(root, rel));
    else if (entry.isFile()) out.push(rel);
  }
  return out;
}
