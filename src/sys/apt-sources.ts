import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { GuestError } from '../model/errors.js';

export interface AptSource {
  uri: string;
  suites: string[];
  components: string[];
}

/** Entries of the host's apt sources: deb822 `.sources` files and one-line `sources.list` files. */
export function readAptSources(etcApt = '/etc/apt'): AptSource[] {
  const sources: AptSource[] = [];
  const files = [join(etcApt, 'sources.list'), ...listDir(join(etcApt, 'sources.list.d'))];
  for (const file of files) {
    if (!existsSync(file)) continue;
    const text = readFileSync(file, 'utf8');
    if (file.endsWith('.sources')) sources.push(...parseDeb822(text));
    else if (file.endsWith('.list')) sources.push(...parseOneLine(text));
  }
  return sources;
}

function listDir(dir: string): string[] {
  return existsSync(dir) ? readdirSync(dir).sort().map((f) => join(dir, f)) : [];
}

function parseDeb822(text: string): AptSource[] {
  const out: AptSource[] = [];
  for (const stanza of text.split(/\n\s*\n/)) {
    const fields = new Map<string, string>();
    for (const line of stanza.split('\n')) {
      const m = /^([A-Za-z-]+):\s*(.*)$/.exec(line);
      if (m) fields.set(m[1]!.toLowerCase(), m[2]!.trim());
    }
    if (!(fields.get('types') ?? '').split(/\s+/).includes('deb') || fields.get('enabled') === 'no') continue;
    for (const uri of (fields.get('uris') ?? '').split(/\s+/).filter(Boolean)) {
      out.push({ uri, suites: (fields.get('suites') ?? '').split(/\s+/).filter(Boolean), components: (fields.get('components') ?? '').split(/\s+/).filter(Boolean) });
    }
  }
  return out;
}

function parseOneLine(text: string): AptSource[] {
  const out: AptSource[] = [];
  for (const raw of text.split('\n')) {
    const line = raw.replace(/#.*$/, '').trim();
    const m = /^deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+(\S+)\s*(.*)$/.exec(line);
    if (m) out.push({ uri: m[1]!, suites: [m[2]!], components: m[3]!.split(/\s+/).filter(Boolean) });
  }
  return out;
}

/** The host's distribution id and codename from /etc/os-release. */
export function hostRelease(osRelease = '/etc/os-release'): { id: string; codename: string } {
  const text = existsSync(osRelease) ? readFileSync(osRelease, 'utf8') : '';
  const get = (k: string) => new RegExp(`^${k}="?([^"\\n]*)"?$`, 'm').exec(text)?.[1] ?? '';
  return { id: get('ID'), codename: get('VERSION_CODENAME') };
}

/**
 * `mirror: host`: the host's own archive for the distro (the entry whose suites carry the host's
 * codename, not its -security or -updates suites). Only when the host runs that distro.
 */
export function hostMirror(distro: string, sources = readAptSources(), release = hostRelease()): string {
  if (release.id !== distro) {
    throw new GuestError('E_PIPELINE_INVALID', `rootfs.mirror: host means this host's ${release.id || 'unknown'} mirror, which cannot build ${distro}; give rootfs.mirror a ${distro} mirror URL`);
  }
  const main = sources.find((s) => s.suites.includes(release.codename) && /^(https?|file):/.test(s.uri)) ?? sources.find((s) => /^(https?|file):/.test(s.uri) && !s.suites.some((x) => /-security$/.test(x)));
  if (!main) throw new GuestError('E_PIPELINE_INVALID', `rootfs.mirror: host, but no ${distro} mirror is configured in /etc/apt/sources.list*; give rootfs.mirror a URL`);
  return main.uri.replace(/\/$/, '');
}

/**
 * The host's entries for a suite's companions (`bookworm-updates`, `bookworm-security`), as one-line
 * sources for a chroot of that suite: where the distribution publishes the kernels nodes run after
 * the release. Empty when the host has none (or runs another release).
 */
export function companionSuiteLines(suite: string, keyring: string, sources = readAptSources()): string[] {
  const lines: string[] = [];
  for (const s of sources) {
    if (!/^(https?|file):/.test(s.uri)) continue;
    for (const x of s.suites.filter((x) => x.startsWith(`${suite}-`))) lines.push(`deb [signed-by=${keyring}] ${s.uri} ${x} ${s.components.join(' ')}`);
  }
  return [...new Set(lines)];
}
