import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
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

/** The candidate version of a package in the host's apt sources, with the .deb's sha256. */
export async function aptShow(name: string): Promise<AptPackage> {
  if (!/^[a-z0-9][a-z0-9.+-]*$/.test(name)) throw new GuestError('E_PIPELINE_INVALID', `apt:${name}: not a Debian package name`);
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
