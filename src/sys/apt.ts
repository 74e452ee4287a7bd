import { execFile } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { sha256Hex } from '../model/json.js';
import { GuestError } from '../model/errors.js';
import { controlField } from './deb.js';

const run = promisify(execFile);

export interface AptPackage {
  name: string;
  version: string;
  /** sha256 of the .deb, from the repository's signed metadata. */
  sha256: string;
  filename: string;
}

/**
 * What apt's answer depends on: the package lists, the sources, the pins and dpkg's status, each
 * by path, size, mtime and inode. The same identity means apt-cache would answer the same.
 */
export function aptStateIdentity(): string {
  const files: string[] = ['/etc/apt/sources.list', '/etc/apt/preferences', '/var/lib/dpkg/status'];
  for (const dir of ['/var/lib/apt/lists', '/etc/apt/sources.list.d', '/etc/apt/preferences.d']) {
    if (existsSync(dir)) files.push(...readdirSync(dir).map((f) => join(dir, f)));
  }
  const seen = files.sort().map((f) => {
    try {
      const st = statSync(f);
      return st.isFile() ? `${f}\0${st.size}\0${st.mtimeMs}\0${st.ino}` : '';
    } catch {
      return '';
    }
  });
  return sha256Hex(seen.filter(Boolean).join('\n'));
}

/**
 * The candidate version of a package in the host's apt sources, with the .deb's sha256. With
 * `memo` (a folder), the answer is kept there against aptStateIdentity and reused while apt's state
 * is unchanged: apt-cache alone costs more than half a second on every run. `write: false` (plan)
 * reads the memo but never writes it.
 */
export async function aptShow(name: string, memo?: { dir: string; write: boolean }): Promise<AptPackage> {
  if (!/^[a-z0-9][a-z0-9.+-]*$/.test(name)) throw new GuestError('E_PIPELINE_INVALID', `apt:${name}: not a Debian package name`);
  if (!memo) return aptCacheShow(name);
  const state = aptStateIdentity();
  const file = join(memo.dir, `apt-show-${name}.json`);
  try {
    const known = JSON.parse(readFileSync(file, 'utf8')) as { state: string; pkg: AptPackage };
    if (known.state === state) return known.pkg;
  } catch {
    // not remembered yet, or unreadable: ask apt
  }
  const pkg = await aptCacheShow(name);
  if (memo.write) {
    mkdirSync(memo.dir, { recursive: true });
    const tmp = `${file}.${process.pid}`;
    writeFileSync(tmp, `${JSON.stringify({ state, pkg })}\n`);
    renameSync(tmp, file);
  }
  return pkg;
}

async function aptCacheShow(name: string): Promise<AptPackage> {
  let out: string;
  try {
    out = (await run('apt-cache', ['show', '--no-all-versions', name], { env: { ...process.env, LC_ALL: 'C' } })).stdout;
  } catch (err) {
    const msg = (err as { stderr?: string }).stderr?.trim().split('\n').pop() ?? String(err);
    throw new GuestError('E_NOT_FOUND', `apt package ${name} is not in the host's apt sources (${msg}; run apt-get update, or check the name)`, { cause: err });
  }
  const version = controlField(out, 'Version');
  const sha256 = controlField(out, 'SHA256');
  const filename = controlField(out, 'Filename');
  if (!version || !sha256 || !filename) throw new GuestError('E_NOT_FOUND', `apt package ${name} has no downloadable candidate (run apt-get update)`);
  return { name, version, sha256, filename };
}
