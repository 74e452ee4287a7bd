import { execFile } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { GuestError } from '../model/errors.js';
import { sha256Hex } from '../model/json.js';
import { redact } from '../model/redact.js';
import { controlField } from './deb.js';

const run = promisify(execFile);

/** One .deb as a repository's signed indices name it: what a lock pins. */
export type PinnedPackage = {
  name: string;
  version: string;
  architecture: string;
  /** Path below the mirror's root (`pool/main/k/kmod/kmod_30+20221128-1_amd64.deb`). */
  filename: string;
  size: number;
  sha256: string;
  /** The index's Priority and Section, which a repository rebuilt from the .debs must state again (mmdebstrap's variants select by priority). */
  priority?: string;
  section?: string;
  /** The repository's root, where the package came from one of several (a driver's own repository or the distribution's mirror). */
  mirror?: string;
};

export interface AptRepositorySource {
  mirror: string;
  suite: string;
  components: string[];
  /** Keyring that signs the suite's InRelease. */
  keyring: string;
}

/**
 * apt with a state of its own in a temporary folder: its sources are only the given repositories,
 * its dpkg status is empty (or what setInstalled() says), and nothing of the host's apt
 * configuration (sources, pins, lists) is read or changed. Answers what those repositories offer
 * right now, verified against their signed InRelease files.
 */
export class PrivateApt {
  private constructor(
    private readonly dir: string,
    private readonly sources: AptRepositorySource[],
  ) {}

  /** Downloads the repositories' indices (apt-get update), checking each InRelease's signature. */
  static async update(source: AptRepositorySource | AptRepositorySource[], signal?: AbortSignal): Promise<PrivateApt> {
    const sources = Array.isArray(source) ? source : [source];
    const dir = mkdtempSync(join(tmpdir(), 'gpu-guest-apt-'));
    const apt = new PrivateApt(dir, sources);
    try {
      for (const d of ['lists/partial', 'cache/archives/partial', 'etc/apt.conf.d', 'etc/preferences.d', 'etc/sources.list.d']) mkdirSync(join(dir, d), { recursive: true });
      writeFileSync(join(dir, 'status'), '');
      writeFileSync(join(dir, 'etc/sources.list'), sources.map((s) => `deb [signed-by=${s.keyring}] ${s.mirror} ${s.suite} ${s.components.join(' ')}\n`).join(''));
      const conf = [
        `Dir::Etc "${dir}/etc";`,
        'Dir::Etc::SourceList "sources.list";',
        'Dir::Etc::SourceParts "sources.list.d";',
        'Dir::Etc::Parts "apt.conf.d";',
        'Dir::Etc::PreferencesParts "preferences.d";',
        `Dir::State "${dir}";`,
        `Dir::State::Lists "${dir}/lists";`,
        `Dir::State::status "${dir}/status";`,
        `Dir::Cache "${dir}/cache";`,
        'APT::Architecture "amd64";',
        'Acquire::Languages "none";',
        // the host's proxy settings reach apt through the environment, as for every download
        'Acquire::Retries "3";',
      ];
      writeFileSync(join(dir, 'apt.conf'), `${conf.join('\n')}\n`);
      await apt.apt('apt-get', ['update'], signal, sources.map((s) => `the ${s.suite} indices of ${redact(s.mirror)}`).join(' and '));
      return apt;
    } catch (err) {
      apt.dispose();
      throw err;
    }
  }

  /** The (first) repository's InRelease as apt verified it: its URL and sha256. */
  release(): { url: string; sha256: string } {
    return this.releases()[0]!;
  }

  /** Every repository's InRelease as apt verified it, in the order the sources were given. */
  releases(): { url: string; sha256: string }[] {
    const lists = readdirSync(join(this.dir, 'lists'));
    return this.sources.map((s) => {
      const url = `${s.mirror.replace(/\/$/, '')}/dists/${s.suite}/InRelease`;
      const file = lists.find((f) => f === listFileName(url));
      if (!file) throw new GuestError('E_NOT_FOUND', `${redact(s.mirror)} has no InRelease for ${s.suite} (a lock needs the suite's signed InRelease)`);
      return { url, sha256: sha256Hex(readFileSync(join(this.dir, 'lists', file))) };
    });
  }

  /** Each named version's index stanza (apt-cache show), by `name=version`; a version the repositories lack is E_NOT_FOUND. */
  async show(packages: { name: string; version: string }[], signal?: AbortSignal): Promise<Map<string, string>> {
    const found = new Map<string, string>();
    if (packages.length === 0) return found;
    const out = await this.apt('apt-cache', ['show', ...packages.map((p) => `${p.name}=${p.version}`)], signal, `${packages.length} package(s) of ${this.named()}`);
    for (const stanza of out.split(/\n\s*\n/)) {
      const key = `${controlField(stanza, 'Package')}=${controlField(stanza, 'Version')}`;
      if (!found.has(key) && controlField(stanza, 'SHA256')) found.set(key, stanza.trim());
    }
    for (const p of packages) {
      if (!found.has(`${p.name}=${p.version}`)) throw new GuestError('E_NOT_FOUND', `${p.name} ${p.version} is not in ${this.named()} (the mirror moved on while locking: run lock again)`);
    }
    return found;
  }

  /** Each named version's .deb as the indices describe it; a version the repositories lack is E_NOT_FOUND. */
  async pin(packages: { name: string; version: string }[], signal?: AbortSignal): Promise<PinnedPackage[]> {
    const stanzas = await this.show(packages, signal);
    // with several repositories, the one each .deb comes from (apt's own choice among them)
    const from = this.sources.length > 1 && packages.length ? await this.downloadUrls(packages, signal) : undefined;
    return packages.map((p) => {
      const stanza = stanzas.get(`${p.name}=${p.version}`)!;
      const filename = controlField(stanza, 'Filename')!;
      const url = from?.get(`${p.name}=${p.version}`);
      const mirror = url?.endsWith(`/${filename}`) ? url.slice(0, -filename.length - 1) : undefined;
      return { name: p.name, version: p.version, architecture: controlField(stanza, 'Architecture') ?? 'amd64', filename, size: Number(controlField(stanza, 'Size') ?? 0), sha256: controlField(stanza, 'SHA256')!, ...optional(stanza, 'Priority', 'priority'), ...optional(stanza, 'Section', 'section'), ...(mirror ? { mirror } : {}) };
    });
  }

  /**
   * Makes apt see these packages as installed (their index stanzas as the dpkg status), so that
   * simulateInstall answers what installing more would add to a system of exactly them.
   */
  setInstalled(stanzas: string[]): void {
    writeFileSync(join(this.dir, 'status'), stanzas.map((s) => `${s.replace(/^(Package: .*)$/m, '$1\nStatus: install ok installed')}\n\n`).join(''));
  }

  /** The packages `apt-get install --no-install-recommends` would install or upgrade, each with its version (apt's `Inst` lines). */
  async simulateInstall(packages: string[], signal?: AbortSignal): Promise<{ name: string; version: string }[]> {
    const out = await this.apt('apt-get', ['-s', 'install', '--no-install-recommends', ...packages], signal, `installing ${packages.join(' ')} from ${this.named()}`);
    return instLines(out);
  }

  private async downloadUrls(packages: { name: string; version: string }[], signal?: AbortSignal): Promise<Map<string, string>> {
    const out = await this.apt('apt-get', ['download', '--print-uris', ...packages.map((p) => `${p.name}=${p.version}`)], signal, `${packages.length} package(s) of ${this.named()}`);
    const urls = new Map<string, string>();
    for (const m of out.matchAll(/^'([^']+)' (\S+?)_(\S+?)_\S+\.deb /gm)) urls.set(`${decodeURIComponent(m[2]!)}=${decodeURIComponent(m[3]!).replace(/%3a/gi, ':')}`, m[1]!);
    // the file name drops an epoch: match those by name and the version without it
    for (const p of packages) {
      const key = `${p.name}=${p.version}`;
      if (urls.has(key)) continue;
      const bare = [...urls].find(([k]) => k === `${p.name}=${p.version.replace(/^\d+:/, '')}`);
      if (bare) urls.set(key, bare[1]);
    }
    return urls;
  }

  private named(): string {
    return this.sources.map((s) => `${redact(s.mirror)} ${s.suite}`).join(' and ');
  }

  dispose(): void {
    rmSync(this.dir, { recursive: true, force: true });
  }

  private async apt(cmd: string, args: string[], signal: AbortSignal | undefined, what: string): Promise<string> {
    try {
      const { stdout } = await run(cmd, args, { env: { ...process.env, APT_CONFIG: join(this.dir, 'apt.conf'), LC_ALL: 'C' }, signal, maxBuffer: 256 * 1024 * 1024 });
      return stdout;
    } catch (err) {
      if (signal?.aborted) throw new GuestError('E_INTERRUPTED', `${cmd} ${args[0]} interrupted`, { cause: err });
      const lines = ((err as { stderr?: string }).stderr ?? String(err)).trim().split('\n').filter((l) => /^(E|W|Err):/.test(l));
      throw new GuestError('E_DOWNLOAD', `${cmd} ${args[0]} of ${what} failed: ${lines.at(-1) ?? (err as Error).message}`, { details: lines.slice(-6), cause: err });
    }
  }
}

/** What a lock pins for a step that installs packages with apt: each .deb, and the InRelease files they were resolved from. */
export type LockedPackages = { releases: { url: string; sha256: string }[]; packages: PinnedPackage[] };

/**
 * Exactly what apt adds when `install` is installed into a system of exactly `installed` (a locked
 * rootfs), from these repositories: apt's own choice (a simulated install with the installed set as
 * its dpkg status), each version pinned by its .deb's sha256 from the signed indices and naming the
 * repository it comes from. apt's refusal (a version the repositories lack, a conflict) is passed
 * to `refused` for the step's own error.
 */
export async function lockAddedPackages(sources: AptRepositorySource[], installed: PinnedPackage[], install: string[], signal: AbortSignal, refused: (said: string, err: GuestError) => GuestError): Promise<LockedPackages> {
  const apt = await PrivateApt.update(sources, signal);
  try {
    apt.setInstalled([...(await apt.show(installed, signal)).values()]);
    const added = await apt.simulateInstall(install, signal).catch((err: unknown) => {
      if (!(err instanceof GuestError) || err.code !== 'E_DOWNLOAD') throw err;
      throw refused(err.message.replace(/^.*failed: (E: )?/, ''), err);
    });
    // each names its repository: with one source apt's download URLs are not asked for
    const packages = (await apt.pin(added, signal)).map((pkg) => ({ ...pkg, mirror: pkg.mirror ?? sources[0]!.mirror.replace(/\/$/, '') }));
    return { releases: apt.releases(), packages: packages.sort((a, b) => a.name.localeCompare(b.name)) };
  } finally {
    apt.dispose();
  }
}

/** `Inst name [old] (version suite [arch])` lines of a simulated apt or mmdebstrap run, one version per package. */
export function instLines(text: string): { name: string; version: string }[] {
  const chosen = new Map<string, string>();
  for (const line of text.split('\n')) {
    const m = /^Inst (\S+?)(?::\S+)? (?:\[[^\]]*\] )?\((\S+) /.exec(line);
    if (!m) continue;
    const [, name, version] = m as unknown as [string, string, string];
    if (chosen.has(name) && chosen.get(name) !== version) throw new GuestError('E_STEP_FAILED', `apt chose ${name} in two versions (${chosen.get(name)}, ${version}) while simulating`);
    chosen.set(name, version);
  }
  return [...chosen].map(([name, version]) => ({ name, version }));
}

/** The file name apt keeps a URL's download under in its lists folder (apt's URItoFileName). */
function listFileName(url: string): string {
  const bare = url.replace(/^[a-z+]+:\/\//, '').replace(/^[^/@]*@/, '');
  return bare.replace(/[\\|{}[\]<>"^~_=!@#$%&*]/g, (c) => `%${c.charCodeAt(0).toString(16).padStart(2, '0')}`).replace(/\//g, '_');
}

function optional<K extends string>(stanza: string, field: string, key: K): Partial<Record<K, string>> {
  const value = controlField(stanza, field);
  return value ? ({ [key]: value } as Record<K, string>) : {};
}
