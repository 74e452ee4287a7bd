import { execFile, spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, afterEach } from 'vitest';
import { recordedSessions } from '../src/sys/chroot.js';
import { mountsUnder } from '../src/sys/mounts.js';
import { testSigningKey } from './fixtures/signing.js';

export const repoRoot = resolve(import.meta.dirname, '..');
export const harness = join(repoRoot, 'test/fixtures/harness.mjs');
export const cliBin = join(repoRoot, 'bin/gpu-guest.js');

const made: string[] = [];
afterEach(() => {
  for (const d of made.splice(0)) rmSync(d, { recursive: true, force: true });
});

const suiteMade: string[] = [];
afterAll(() => {
  for (const d of suiteMade.splice(0)) rmSync(d, { recursive: true, force: true });
});

/** A temporary folder for a whole test file (made in beforeAll), removed after its last test. */
export function suiteDir(prefix = 'gpu-guest-suite-'): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  suiteMade.push(dir);
  return dir;
}

/** A temporary folder removed after the test. */
export function testDir(prefix = 'gpu-guest-test-'): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  made.push(dir);
  return dir;
}

export interface Proc {
  code: number | null;
  stdout: string;
  stderr: string;
}

export interface Started {
  child: ReturnType<typeof spawn>;
  done: Promise<Proc>;
  /** Resolves when stdout has printed text matching the pattern. */
  waitFor(pattern: RegExp, timeoutMs?: number): Promise<void>;
  output(): string;
}

/** Starts a node script with arguments; collects its output. */
export function start(script: string, args: string[], options: { cwd?: string; env?: NodeJS.ProcessEnv } = {}): Started {
  const child = spawn(process.execPath, [script, ...args], { cwd: options.cwd, env: { ...process.env, CI: 'true', ...options.env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  const waiters: { pattern: RegExp; resolve: () => void }[] = [];
  child.stdout!.on('data', (d: Buffer) => {
    stdout += d.toString();
    for (const w of waiters.splice(0)) {
      if (w.pattern.test(stdout)) w.resolve();
      else waiters.push(w);
    }
  });
  child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  const done = new Promise<Proc>((r) => child.on('close', (code) => r({ code, stdout, stderr })));
  return {
    child,
    done,
    output: () => stdout + stderr,
    waitFor(pattern, timeoutMs = 30_000) {
      if (pattern.test(stdout)) return Promise.resolve();
      return new Promise((res, rej) => {
        const timer = setTimeout(() => rej(new Error(`timed out waiting for ${pattern}; output so far:\n${stdout}\n${stderr}`)), timeoutMs);
        waiters.push({ pattern, resolve: () => (clearTimeout(timer), res()) });
      });
    },
  };
}

export function run(script: string, args: string[], options: { cwd?: string; env?: NodeJS.ProcessEnv } = {}): Promise<Proc> {
  return start(script, args, options).done;
}

/** gpu-guest in a network namespace of its own: only a loopback that is down, no route anywhere. */
export function runWithoutNetwork(args: string[]): Promise<Proc> {
  return new Promise((done) => {
    execFile('unshare', ['--net', '--', process.execPath, cliBin, ...args], { env: { ...process.env, CI: 'true' }, maxBuffer: 64 << 20 }, (err, stdout, stderr) => {
      done({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr });
    });
  });
}

export interface ExecTask {
  id: string;
  deps?: string[];
  script?: string;
  /** Instead of a script: enter this root with a chroot session and sleep `seconds` there. */
  chroot?: string;
  seconds?: number;
  cpu?: 1 | 'all';
  files?: Record<string, string | string[]>;
  /** Instead of a script: the step throws a GuestError with this code and message. */
  throw?: { code: string; message: string };
  /** Instead of a script: the step throws a plain TypeError (a bug, not a GuestError). */
  crash?: string;
  /** A step kind other than the harness's own (to test an unknown kind). */
  kind?: string;
  /** Keyed by what its upstreams made, not by their keys (early cutoff). */
  cutoff?: boolean;
  /** Instead of a script: `make <target>` in the folder `tree` (its Makefile) the way kernel builds run make. */
  make?: { tree: string; target: string };
  /** `--set` keys whose values the script reads as $VAR_<key> (and its key covers). */
  uses?: string[];
}

/** Writes a harness graph file and returns the common CLI arguments for it. */
export function execGraph(dir: string, tasks: ExecTask[], name = 'demo', matrix?: Record<string, string>[]): string[] {
  const file = join(dir, `${name}.json`);
  writeFileSync(file, JSON.stringify({ name, tasks, ...(matrix ? { matrix } : {}) }));
  return ['--pipeline', file, '--cache-dir', join(dir, 'cache'), '--out-dir', join(dir, 'out')];
}

/**
 * The cache that expensive fixtures (kernel source, kernel build, base rootfs) share across test
 * files and runs: built once through gpu-guest's own cache. GPU_GUEST_TEST_CACHE overrides it.
 */
export function sharedCacheDir(): string {
  return process.env.GPU_GUEST_TEST_CACHE ?? join(repoRoot, '.cache', 'test-cache');
}

export const FAKE_SHA = 'c'.repeat(64);

/** The nvidia test kernel's fragment for verify's container checks (the minimal profile lacks what they need). */
export const CONTAINER_FRAGMENT = join(repoRoot, 'test/fixtures/kernel/container.conf');

/**
 * A pipeline file for tests: the shipped base and GPU fragment, with sections replaced as given.
 * `kernelOf` gives the pipeline another vendor's kernel section (fragment, local version, signing):
 * with the same kernel source, the same kernel build as that vendor's test pipeline.
 */
export function writePipeline(dir: string, vendor: 'nvidia' | 'intel', kernel: string, extra = '', kernelOf: 'nvidia' | 'intel' = vendor): string {
  const file = join(dir, `${vendor}-test.yaml`);
  const nvidia = vendor === 'nvidia' ? `driver:\n  version: "550.127.05"\n  sha256: ${FAKE_SHA}\ntoolkit:\n  version: "1.17.3-1"\n` : '';
  // the nvidia guest signs its modules: every nvidia build and verify exercises kernel.moduleSigning
  const signing = kernelOf === 'nvidia' ? testSigningKey(sharedCacheDir()) : undefined;
  const signingLines = signing ? `  moduleSigning:\n    key: ${signing.key}\n    certificate: ${signing.certificate}\n` : '';
  writeFileSync(
    file,
    `name: ${vendor}-test\nvendor: ${vendor}\nkernel:\n  profile: minimal\n  fragments: [kernel-configs/fragments/gpu/${kernelOf}.conf${kernelOf === 'nvidia' ? `, ${CONTAINER_FRAGMENT}` : ''}]\n  localVersion: -${kernelOf}-gpu\n${kernel}${signingLines}rootfs:\n  distro: debian\n  suite: bookworm\n${vendor === 'nvidia' ? '  extraPackages: [gcc, make, libelf1]\n' : ''}${nvidia}${extra}`,
  );
  return file;
}

/**
 * The nvidia test pipeline with driver.source: apt: `driver` is the driver section's body (its
 * lines after `driver:`), and the rootfs gets no build-only packages (apt brings DKMS's compiler,
 * and the step purges it again).
 */
export function writeAptPipeline(dir: string, kernel: string, driver: string): string {
  const file = writePipeline(dir, 'nvidia', kernel);
  writeFileSync(file, readFileSync(file, 'utf8').replace(/^driver:\n(  .*\n)+/m, `driver:\n${driver}`).replace('  extraPackages: [gcc, make, libelf1]\n', '  extraPackages: []\n'));
  return file;
}

/** PATH with every host command but the ones named. */
export function pathWithout(dir: string, missing: string[]): string {
  const bin = join(dir, 'bin');
  mkdirSync(bin);
  for (const d of ['/usr/local/bin', '/usr/bin', '/bin', '/usr/sbin', '/sbin']) {
    let names: string[] = [];
    try {
      names = readdirSync(d);
    } catch {
      continue;
    }
    for (const f of names) {
      if (missing.includes(f)) continue;
      try {
        symlinkSync(join(d, f), join(bin, f));
      } catch {
        // the first folder on PATH wins, as it would
      }
    }
  }
  return bin;
}

/** Resolves once a file exists: processes signal progress through marker files, never through sleeps. */
export async function fileAppears(path: string, timeoutMs = 30_000): Promise<void> {
  const until = Date.now() + timeoutMs;
  while (!existsSync(path)) {
    if (Date.now() > until) throw new Error(`timed out waiting for ${path}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/**
 * Mounts under a cache that nobody owns any more: test files share one cache and run side by side,
 * so another file's live chroot session (recorded in <cache>/chroot-sessions with its pid) is not a
 * leak; a mount of a finished process, or of no session at all, is.
 */
export function leakedMounts(cacheDir: string): string[] {
  const live = recordedSessions(cacheDir).filter((s) => s.alive).map((s) => s.root);
  return mountsUnder(cacheDir).filter((m) => !live.some((root) => m === root || m.startsWith(`${root}/`)));
}
