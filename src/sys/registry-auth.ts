import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { homedir, tmpdir } from 'node:os';
import { join } from 'node:path';
import { GuestError } from '../model/errors.js';

export interface RegistryCredentials {
  username: string;
  password: string;
  /** Where they came from, for messages (never the values). */
  source: string;
}

/**
 * Credentials for a registry host: --registry-auth FILE (a Docker config.json), else
 * REGISTRY_USERNAME/REGISTRY_PASSWORD, else the user's Docker config. Undefined: anonymous.
 */
export function findCredentials(host: string, authFile: string | undefined, env: NodeJS.ProcessEnv): RegistryCredentials | undefined {
  if (authFile) {
    if (!existsSync(authFile)) throw new GuestError('E_USAGE', `--registry-auth ${authFile}: no such file (give a Docker config.json)`);
    const found = fromDockerConfig(authFile, host);
    if (!found) throw new GuestError('E_USAGE', `--registry-auth ${authFile}: has no credentials for ${host} (run docker login ${host} or add an auths entry)`);
    return found;
  }
  if (env.REGISTRY_USERNAME || env.REGISTRY_PASSWORD) {
    if (!env.REGISTRY_USERNAME || !env.REGISTRY_PASSWORD) throw new GuestError('E_USAGE', 'set both REGISTRY_USERNAME and REGISTRY_PASSWORD, or neither');
    return { username: env.REGISTRY_USERNAME, password: env.REGISTRY_PASSWORD, source: 'REGISTRY_USERNAME/REGISTRY_PASSWORD' };
  }
  const dockerConfig = join(env.DOCKER_CONFIG ?? join(homedir(), '.docker'), 'config.json');
  return existsSync(dockerConfig) ? fromDockerConfig(dockerConfig, host) : undefined;
}

function fromDockerConfig(file: string, host: string): RegistryCredentials | undefined {
  let config: { auths?: Record<string, { auth?: string; username?: string; password?: string }> };
  try {
    config = JSON.parse(readFileSync(file, 'utf8'));
  } catch {
    throw new GuestError('E_USAGE', `${file} is not valid JSON (expected a Docker config.json)`);
  }
  const entry = Object.entries(config.auths ?? {}).find(([k]) => k.replace(/^https?:\/\//, '').replace(/\/.*$/, '') === host)?.[1];
  if (!entry) return undefined;
  if (entry.auth) {
    const decoded = Buffer.from(entry.auth, 'base64').toString();
    const i = decoded.indexOf(':');
    return { username: decoded.slice(0, i), password: decoded.slice(i + 1), source: file };
  }
  if (entry.username && entry.password) return { username: entry.username, password: entry.password, source: file };
  return undefined;
}

/** A private auth file for skopeo (mode 0600, removed by the returned cleanup). */
export function writeAuthFile(host: string, creds: RegistryCredentials): { file: string; remove(): void } {
  const dir = mkdtempSync(join(tmpdir(), 'gpu-guest-auth-'));
  const file = join(dir, 'auth.json');
  writeFileSync(file, JSON.stringify({ auths: { [host]: { auth: Buffer.from(`${creds.username}:${creds.password}`).toString('base64') } } }), { mode: 0o600 });
  return { file, remove: () => rmSync(dir, { recursive: true, force: true }) };
}

/** Replaces every occurrence of a secret in text that is about to be shown or logged. */
export function redactSecret(text: string, creds?: RegistryCredentials): string {
  if (!creds) return text;
  let out = text;
  for (const s of [creds.password, Buffer.from(`${creds.username}:${creds.password}`).toString('base64')]) if (s) out = out.split(s).join('***');
  return out;
}
