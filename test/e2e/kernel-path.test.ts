import { createHash, randomUUID } from 'node:crypto';
import { execFile, execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, openSync, readdirSync, readFileSync, readlinkSync, readSync, closeSync, writeFileSync } from 'node:fs';
import { promisify } from 'node:util';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DEBIAN_TARBALL, debianKernelVersion, startKernelOrg, type KernelOrg } from '../fixtures/kernel-org.js';
import { cliBin, leakedMounts, run, sharedCacheDir, suiteDir, writePipeline } from '../helpers.js';

const version = debianKernelVersion();
const release = `${version}-nvidia-gpu`;
let server: KernelOrg;
let out: string;
let pipelineFile: string;
let first: Awaited<ReturnType<typeof run>>;

// One real kernel build for the whole run, kept in the shared test cache for later runs and files.
beforeAll(async () => {
  server = await startKernelOrg([{ path: `v6.x/linux-${version}.tar.xz`, file: DEBIAN_TARBALL }]);
  const dir = suiteDir('gpu-guest-e2e-');
  out = join(dir, 'out');
  pipelineFile = writePipeline(dir, 'nvidia', `  version: "6.1"\n  source:\n    mirrors: [${server.mirror}]\n`);
  first = await run(cliBin, ['build', '--until', 'kernel-debs', '--pipeline', pipelineFile, '--cache-dir', sharedCacheDir(), '--out-dir', out]);
}, 1_800_000);
afterAll(async () => server?.close());

describe('nvidia kernel path end to end (kernel.org-style mirror → debs)', () => {
  it('builds', () => {
    expect(first.code, `${first.stdout}\n${first.stderr}`).toBe(0);
  });

  it('lays out the kernel under the names Kata expects', () => {
    const kernel = join(out, 'nvidia-test/kernel');
    for (const f of [`vmlinuz-${release}`, `vmlinux-${release}`, `config-${release}`, `System.map-${release}`]) expect(existsSync(join(kernel, f)), f).toBe(true);
    expect(readlinkSync(join(kernel, 'vmlinuz-nvidia-gpu.container'))).toBe(`vmlinuz-${release}`);
    expect(readlinkSync(join(kernel, 'vmlinux-nvidia-gpu.container'))).toBe(`vmlinux-${release}`);
    // a bzImage carries the "HdrS" boot protocol signature at 0x202
    const fd = openSync(join(kernel, `vmlinuz-${release}`), 'r');
    const buf = Buffer.alloc(4);
    readSync(fd, buf, 0, 4, 0x202);
    closeSync(fd);
    expect(buf.toString()).toBe('HdrS');
  });

  it('keeps every option of the nvidia fragment in the built config', () => {
    const config = readFileSync(join(out, `nvidia-test/kernel/config-${release}`), 'utf8');
    for (const line of ['CONFIG_HOTPLUG_PCI_PCIE=y', 'CONFIG_PCI_MMCONFIG=y', 'CONFIG_MODULES=y', 'CONFIG_MODULE_UNLOAD=y', 'CONFIG_LOCALVERSION="-nvidia-gpu"', 'CONFIG_X86_PAT=y', 'CONFIG_FW_LOADER=y']) {
      expect(config).toContain(`${line}\n`);
    }
    // off: either "is not set" or absent because its menu (DRM) is off
    expect(config).not.toMatch(/^CONFIG_DRM_NOUVEAU=/m);
  });

  it('produces linux-headers and linux-image debs, read back with dpkg-deb', () => {
    const debs = join(out, 'nvidia-test/debs');
    for (const pkg of [`linux-headers-${release}`, `linux-image-${release}`]) {
      const file = join(debs, `${pkg}_${version}-1_amd64.deb`);
      expect(existsSync(file), file).toBe(true);
      expect(execFileSync('dpkg-deb', ['-f', file, 'Package'], { encoding: 'utf8' }).trim()).toBe(pkg);
    }
    const contents = execFileSync('dpkg-deb', ['-c', join(debs, `linux-headers-${release}_${version}-1_amd64.deb`)], { encoding: 'utf8' });
    expect(contents).toContain(`./usr/src/linux-headers-${release}/Makefile`);
    const manifest = JSON.parse(readFileSync(join(out, 'nvidia-test/manifest.json'), 'utf8'));
    const debsTask = manifest.tasks.find((t: { id: string }) => t.id === 'kernel-debs');
    expect(debsTask.result.packages.map((p: { package: string }) => p.package)).toEqual(expect.arrayContaining([`linux-headers-${release}`, `linux-image-${release}`]));
    expect(manifest.tasks.find((t: { id: string }) => t.id === 'kernel-source').result.version).toBe(version);
  });

  it('packages the same build as RPMs with kernel.packages: rpm, without compiling again', async () => {
    const rpmOut = join(out, '..', 'rpm-out');
    const r = await run(cliBin, ['build', '--until', 'kernel-debs', '--pipeline', pipelineFile, '--cache-dir', sharedCacheDir(), '--out-dir', rpmOut, '--set', 'kernel.packages=rpm']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/cached kernel-build/);
    const manifest = JSON.parse(readFileSync(join(rpmOut, 'nvidia-test/manifest.json'), 'utf8'));
    const debsTask = manifest.tasks.find((t: { id: string }) => t.id === 'kernel-debs');
    const pkgs = debsTask.result.packages;
    expect(pkgs.find((p: { package: string }) => p.package === 'kernel')).toMatchObject({ version: `${version.replace(/-/g, '_')}_nvidia_gpu-1`, architecture: 'x86_64' });
    // the log of the run that made the entry (this run's, or an earlier one's when it is cached)
    expect(readFileSync(join(sharedCacheDir(), 'entries', debsTask.key, 'log.txt'), 'utf8')).not.toMatch(/^ {2}CC /m);
  }, 900_000);

  it('packages a kernel from a cache moved to another folder, compiling nothing again', async () => {
    const manifest = JSON.parse(readFileSync(join(out, 'nvidia-test/manifest.json'), 'utf8'));
    const keyOf = (id: string): string => manifest.tasks.find((t: { id: string }) => t.id === id).key;
    const moved = join(suiteDir('gpu-guest-moved-'), 'cache');
    mkdirSync(join(moved, 'entries'), { recursive: true });
    for (const id of ['kernel-source', 'kernel-config', 'kernel-build']) execFileSync('cp', ['-a', join(sharedCacheDir(), 'entries', keyOf(id)), join(moved, 'entries')]);
    // the old entries are gone for this build: an empty tmpfs over them, in a mount namespace of its own
    const movedOut = join(moved, '..', 'out');
    const hide = 'mount -t tmpfs none "$1" && shift && exec "$@"';
    const argv = ['--mount', '--propagation', 'private', '--', 'sh', '-c', hide, 'sh', join(sharedCacheDir(), 'entries'), process.execPath, cliBin, 'build', '--until', 'kernel-debs', '--pipeline', pipelineFile, '--cache-dir', moved, '--out-dir', movedOut];
    const r = await promisify(execFile)('unshare', argv, { env: { ...process.env, CI: 'true' }, maxBuffer: 64 << 20 }).catch((e: { stdout: string; stderr: string }) => e);
    expect(r.stdout, `${r.stdout}\n${r.stderr}`).toMatch(/cached kernel-build/);
    const movedManifest = JSON.parse(readFileSync(join(movedOut, 'nvidia-test/manifest.json'), 'utf8'));
    const debsTask = movedManifest.tasks.find((t: { id: string }) => t.id === 'kernel-debs');
    // same inputs, same key, wherever the cache is
    expect(debsTask.key).toBe(keyOf('kernel-debs'));
    expect(readdirSync(join(movedOut, 'nvidia-test/debs'))).toEqual(expect.arrayContaining([`linux-headers-${release}_${version}-1_amd64.deb`, `linux-image-${release}_${version}-1_amd64.deb`]));
    expect(readFileSync(join(moved, 'entries', debsTask.key, 'log.txt'), 'utf8')).not.toMatch(/^ {2}(CC|LD|AS) /m);
    expect(leakedMounts(moved)).toEqual([]);
  }, 900_000);

  it('compiles nothing when a fragment edit leaves the .config as it was (early cutoff)', async () => {
    const same = join(suiteDir('gpu-guest-cutoff-'), 'same.conf');
    // a comment of this run's own, so that kernel-config runs even on a test cache that saw this test before
    writeFileSync(same, `# asks for what the guest already has: the final .config stays the same (${randomUUID()})\nCONFIG_PCI_MMCONFIG=y\n`);
    const r = await run(cliBin, ['build', '--until', 'kernel-debs', '--pipeline', pipelineFile, '--cache-dir', sharedCacheDir(), '--out-dir', join(out, '..', 'cutoff-out'), '--fragment', same]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/succeeded kernel-config/);
    expect(r.stdout).toMatch(/cached kernel-build: what kernel-config made is unchanged/);
    expect(r.stdout).toMatch(/cached kernel-debs/);
  }, 600_000);

  it('builds another configuration from the nearest object tree, compiling what it changes; the first configuration built again from that tree is the cold build, byte for byte', async () => {
    const manifest = JSON.parse(readFileSync(join(out, 'nvidia-test/manifest.json'), 'utf8'));
    const keyOf = (id: string): string => manifest.tasks.find((t: { id: string }) => t.id === id).key;
    const dir = suiteDir('gpu-guest-seed-');
    const cache = join(dir, 'cache');
    mkdirSync(join(cache, 'entries'), { recursive: true });
    // the shared entries as hard links: an entry is never written, and a seed is copied before make runs
    for (const id of ['kernel-source', 'kernel-config', 'kernel-build']) execFileSync('cp', ['-al', join(sharedCacheDir(), 'entries', keyOf(id)), join(cache, 'entries')]);
    const build = (o: string, ...more: string[]) => run(cliBin, ['build', '--until', 'kernel-build', '--pipeline', pipelineFile, '--cache-dir', cache, '--out-dir', join(dir, o), ...more]);
    const logOf = (o: string) => readFileSync(join(dir, o, 'nvidia-test/logs/kernel-build.log'), 'utf8');
    const compiled = (log: string) => log.split('\n').filter((l) => /^ {2}CC( \[M\])? /.test(l)).map((l) => l.trim().split(/\s+/).pop());
    // a one-line change and a module the guest did not have
    const change = join(dir, 'change.conf');
    writeFileSync(change, 'CONFIG_PRINTK_TIME=y\nCONFIG_DUMMY=m\n');
    const changed = await build('changed', '--fragment', change);
    expect(changed.code, `${changed.stdout}\n${changed.stderr}`).toBe(0);
    expect(logOf('changed')).toContain(`starting from the object tree of kernel-build ${keyOf('kernel-build').slice(0, 12)} (configuration symbols that differ: 2)`);
    expect(compiled(logOf('changed'))).toEqual(expect.arrayContaining(['kernel/printk/printk.o', 'drivers/net/dummy.o']));
    expect(compiled(logOf('changed')).length).toBeLessThan(40);
    const changedKey = JSON.parse(readFileSync(join(dir, 'changed/nvidia-test/manifest.json'), 'utf8')).tasks.find((t: { id: string }) => t.id === 'kernel-build').key;
    // the first configuration again, forced: never from its own entry, so from the changed one's tree
    const again = await build('again', '--force', 'kernel-build');
    expect(again.code, `${again.stdout}\n${again.stderr}`).toBe(0);
    expect(logOf('again')).toContain(`starting from the object tree of kernel-build ${changedKey.slice(0, 12)}`);
    expect(compiled(logOf('again'))).toContain('kernel/printk/printk.o');
    const cold = packagedFiles(join(out, 'nvidia-test/kernel'), join(sharedCacheDir(), 'entries', keyOf('kernel-build'), 'out/build'));
    const incremental = packagedFiles(join(dir, 'again/nvidia-test/kernel'), join(cache, 'entries', keyOf('kernel-build'), 'out/build'));
    expect(incremental).toEqual(cold);
    // the module the changed configuration had stays in the tree, outside what is packaged
    expect(existsSync(join(cache, 'entries', keyOf('kernel-build'), 'out/build/drivers/net/dummy.ko'))).toBe(true);
    expect(leakedMounts(cache)).toEqual([]);
  }, 1_800_000);

  it('does nothing on a second run: every task comes from the cache', async () => {
    const again = await run(cliBin, ['build', '--until', 'kernel-debs', '--pipeline', pipelineFile, '--cache-dir', sharedCacheDir(), '--out-dir', out]);
    expect(again.code, again.stderr).toBe(0);
    for (const id of ['kernel-source', 'kernel-config', 'kernel-build', 'kernel-debs']) expect(again.stdout).toMatch(new RegExp(`cached ${id}`));
    expect(again.stdout).toMatch(/0 to run/);
  });
});

/**
 * sha256 by path of what a kernel build hands on: the published kernel files, the modules of
 * modules.order, and what kernel-debs' linux-headers package copies from the object tree
 * (builddeb: arch/x86/include, include, scripts, Module.symvers, objtool).
 */
function packagedFiles(published: string, tree: string): Record<string, string> {
  const files: Record<string, string> = {};
  const hash = (path: string) => createHash('sha256').update(readFileSync(path)).digest('hex');
  for (const f of readdirSync(published)) files[`published/${f}`] = hash(join(published, f));
  const modules = readFileSync(join(tree, 'modules.order'), 'utf8').split('\n').filter(Boolean).map((m) => m.replace(/\.o$/, '.ko'));
  const listed = execFileSync('find', ['arch/x86/include', 'include', 'scripts', '-type', 'f'], { cwd: tree, encoding: 'utf8' }).split('\n').filter(Boolean);
  for (const f of [...modules, ...listed, 'Module.symvers', 'modules.builtin', 'modules.builtin.modinfo', 'tools/objtool/objtool']) files[f] = hash(join(tree, f));
  return files;
}
