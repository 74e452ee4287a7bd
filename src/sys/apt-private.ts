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
export interface PinnedPackage {
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
}

export interface AptRepositorySource {
  mirror: string;
  suite: string;
  components: string[];
  /** Keyring that signs the suite's InRelease. */
  keyring: string;
}

/**
 * apt with a state of its own in a temporary folder: its sources are only the one repository, its
 * dpkg status is empty, and nothing of the host's apt configuration (sources, pins, lists) is read
 * or changed. Answers what that repository offers right now, verified against its signed InRelease.
 */
export class PrivateApt {
  private constructor(
    private readonly dir: string,
    private readonly source: AptRepositorySource,
  ) {}

  /** Downloads the repository's indices (apt-get update), checking InRelease's signature. */
  static async update(source: AptRepositorySource, signal?: AbortSignal): Promise<PrivateApt> {
    const dir = mkdtempSync(join(tmpdir(), 'gpu-guest-apt-'));
    const apt = new PrivateApt(dir, source);
    try {
      for (const d of ['lists/partial', 'cache/archives/partial', 'etc/apt.conf.d', 'etc/preferences.d', 'etc/sources.list.d']) mkdirSync(join(dir, d), { recursive: true });
      writeFileSync(join(dir, 'status'), '');
      writeFileSync(join(dir, 'etc/sources.list'), `deb [signed-by=${source.keyring}] ${source.mirror} ${source.suite} ${source.components.join(' ')}\n`);
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
      await apt.apt('apt-get', ['update'], signal, `the ${source.suite} indices of ${redact(source.mirror)}`);
      return apt;
    } catch (err) {
      apt.dispose();
      throw err;
    }
  }

  /** The repository's InRelease as apt verified it: its URL and sha256. */
  release(): { url: string; sha256: string } {
    const file = readdirSync(join(this.dir, 'lists')).find((f) => f.endsWith('_InRelease'));
    if (!file) throw new GuestError('E_NOT_FOUND', `${redact(this.source.mirror)} has no InRelease for ${this.source.suite} (a lock needs the suite's signed InRelease)`);
    return { url: `${this.source.mirror.replace(/\/$/, '')}/dists/${this.source.suite}/InRelease`, sha256: sha256Hex(readFileSync(join(this.dir, 'lists', file))) };
  }

  /** Each named version's .deb as the indices describe it; a version the repository lacks is E_NOT_FOUND. */
  async pin(packages: { name: string; version: string }[], signal?: AbortSignal): Promise<PinnedPackage[]> {
    if (packages.length === 0) return [];
    const out = await this.apt('apt-cache', ['show', ...packages.map((p) => `${p.name}=${p.version}`)], signal, `${packages.length} package(s) of ${redact(this.source.mirror)}`);
    const found = new Map<string, PinnedPackage>();
    for (const stanza of out.split(/\n\s*\n/)) {
      const name = controlField(stanza, 'Package');
      const version = controlField(stanza, 'Version');
      const sha256 = controlField(stanza, 'SHA256');
      const filename = controlField(stanza, 'Filename');
      if (!name || !version || !sha256 || !filename) continue;
      const key = `${name}=${version}`;
      if (!found.has(key)) found.set(key, { name, version, architecture: controlField(stanza, 'Architecture') ?? 'amd64', filename, size: Number(controlField(stanza, 'Size') ?? 0), sha256, ...optional(stanza, 'Priority', 'priority'), ...optional(stanza, 'Section', 'section') });
    }
    return packages.map((p) => {
      const pinned = found.get(`${p.name}=${p.version}`);
      if (!pinned) throw new GuestError('E_NOT_FOUND', `${p.name} ${p.version} is not in ${redact(this.source.mirror)} ${this.source.suite} (the mirror moved on while locking: run lock again)`);
      return pinned;
    });
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

function optional<K extends string>(stanza: string, field: string, key: K): Partial<Record<K, string>> {
  const value = controlField(stanza, field);
  return value ? ({ [key]: value } as Record<K, string>) : {};
}
