import { copyFileSync, cpSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { requireNetwork } from '../../sys/offline.js';
import { GuestError } from '../../model/errors.js';
import type { RootfsResult, VgpuHostModulesResult } from '../../model/results.js';
import type { StepContext, StepDefinition } from '../../model/step.js';
import { companionSuiteLines } from '../../sys/apt-sources.js';
import { withChroot, type ChrootSession } from '../../sys/chroot.js';
import { runLogged } from '../../sys/exec.js';
import { sha256File } from '../../sys/hash.js';
import { jobs } from '../../sys/kbuild.js';
import { unpackRootfs } from '../../sys/rootfs-tar.js';
import { preflightDriverRun } from '../nvidia/driver-run.js';
import { readRecipe } from '../rootfs/recipe.js';
import { extractCheckedRun, findModules, firstCompilerError, stripModules } from '../nvidia/driver-tree.js';

type HostModulesParams = { version: string; sha256: string; url: string | null; releases: string[] };
type HostModulesInputs = { rootfs: RootfsResult };
type HostModulesContext = StepContext<HostModulesParams, HostModulesInputs>;

/** Inside the chroot: where the .run's kernel tree is built and the kernel packages are unpacked. */
const WORK = 'var/tmp/gpu-guest/vgpu';
/** What the image carries per node kernel, laid out as /lib/modules/<release>/. */
export const PREBUILT = 'prebuilt';
/** The files depmod needs besides the modules themselves. */
const MODULE_INDEXES = ['modules.builtin', 'modules.builtin.modinfo', 'modules.order'];

/**
 * vgpu-host-modules (vgpu.hostKernels): NVIDIA's kernel modules built when the image is built, for
 * each node kernel release named, so that the vGPU manager loads them on an air-gapped node without
 * fetching headers. In a chroot of the image's base: the distribution's linux-headers-<release>
 * (apt, from the base's own sources), the .run's kernel/ tree built with NVIDIA's Makefile for that
 * release, then the distribution's linux-image-<release> unpacked (not installed) for the modules
 * NVIDIA's depend on (drm, vfio, mdev …: the node's container has no /lib/modules of the host).
 * Out: prebuilt/<release>/ with updates/nvidia/*.ko, that dependency closure and depmod's indexes.
 */
export const vgpuHostModules: StepDefinition<HostModulesParams, HostModulesInputs, VgpuHostModulesResult> = {
  kind: 'vgpu-host-modules',
  version: 1,
  resources: { cpu: 'all' },
  preflight: (p, _files, ctx) => preflightDriverRun(ctx, { path: ctx.locations.run, url: p.url, version: p.version, sha256: p.sha256, what: 'vGPU driver', key: 'vgpu.version' }),
  run: (ctx) => buildHostModules(ctx),
};

async function buildHostModules(ctx: HostModulesContext): Promise<VgpuHostModulesResult> {
  const p = ctx.params;
  requireNetwork(ctx.network, `vgpu.hostKernels (the node kernels' headers from apt)`, [ctx.upstream.rootfs.result.mirror], 'build the image once with the network into this cache, or leave vgpu.hostKernels empty');
  const root = join(ctx.workDir, 'root');
  await unpackRootfs(ctx.log, join(ctx.upstream.rootfs.dir, ctx.upstream.rootfs.result.tarball), root, ctx.signal);
  const work = join(root, WORK);
  const run = join(work, 'run');
  mkdirSync(work, { recursive: true });
  await extractCheckedRun(ctx, { path: ctx.locations.run, url: p.url, version: p.version, sha256: p.sha256, what: 'vGPU driver', suffix: '-vgpu-kvm' }, run);
  if (!existsSync(join(run, 'kernel', 'Makefile'))) throw new GuestError('E_DRIVER_SOURCE', `the vGPU driver ${p.version} has no kernel/ tree with a Makefile: its modules cannot be built for vgpu.hostKernels`);
  // name resolution for apt inside the chroot, removed again below
  copyFileSync('/etc/resolv.conf', join(root, 'etc/resolv.conf'));
  // node kernels come from the release's -security and -updates suites too, where the host has them
  const recipe = readRecipe(ctx.files.recipe as string);
  const companions = companionSuiteLines(ctx.upstream.rootfs.result.suite, recipe.keyring);
  if (companions.length) writeFileSync(join(root, 'etc/apt/sources.list.d/gpu-guest-node-kernels.list'), `${companions.join('\n')}\n`);
  const releases: VgpuHostModulesResult['releases'] = [];
  try {
    await withChroot(root, ctx, async (chroot) => {
      await chroot.run('apt-get', ['update']);
      // RELEASE=VERSION pins the distribution's package version
      const kernels = p.releases.map((k) => ({ release: k.split('=')[0]!, pin: k.includes('=') ? `=${k.split('=')[1]}` : '' }));
      await kernelPackages(ctx, p.releases, () => chroot.run('apt-get', ['install', '-y', '--no-install-recommends', ...kernels.map((k) => `linux-headers-${k.release}${k.pin}`)]));
      await kernelPackages(ctx, p.releases, () => chroot.run('apt-get', ['download', ...kernels.map((k) => `linux-image-${k.release}${k.pin}`)], { cwd: `/${WORK}` }));
      for (const k of kernels) releases.push(await buildForRelease(ctx, chroot, root, k.release));
    });
  } finally {
    rmSync(join(root, 'etc/resolv.conf'), { force: true });
  }
  ctx.log.info(`prebuilt NVIDIA ${p.version} modules for ${releases.map((r) => `${r.release} (${r.modules.length} modules, ${r.dependencies.length} of the kernel's)`).join(', ')}`);
  return { driverVersion: p.version, folder: PREBUILT, releases };
}

async function buildForRelease(ctx: HostModulesContext, chroot: ChrootSession, root: string, release: string): Promise<VgpuHostModulesResult['releases'][number]> {
  const build = `/${WORK}/build-${release}`;
  cpSync(join(root, WORK, 'run', 'kernel'), join(root, build), { recursive: true });
  ctx.log.info(`building NVIDIA's kernel modules for ${release}`);
  try {
    await chroot.run('make', ['-C', build, `KERNEL_UNAME=${release}`, `-j${jobs()}`, 'modules']);
  } catch (err) {
    const first = firstCompilerError(ctx.log.tail(400));
    throw new GuestError('E_DRIVER_INSTALL', `NVIDIA's ${ctx.params.version} kernel modules did not build for the node kernel ${release}${first ? `: ${first}` : ' (see the vgpu-host-modules task log)'}`, { cause: err });
  }
  const out = join(ctx.outDir, PREBUILT, release);
  const ours = join(out, 'updates', 'nvidia');
  mkdirSync(ours, { recursive: true });
  const built = readdirSync(join(root, build)).filter((f) => /^nvidia.*\.ko$/.test(f)).sort();
  if (!built.includes('nvidia.ko')) throw new GuestError('E_DRIVER_INSTALL', `building NVIDIA's kernel modules for ${release} made no nvidia.ko`);
  for (const f of built) copyFileSync(join(root, build, f), join(ours, f));
  await stripModules(ctx, out, built.map((f) => `updates/nvidia/${f}`));
  const vermagic = (await runLogged(ctx.log, 'modinfo', ['-F', 'vermagic', join(ours, 'nvidia.ko')], { capture: true, signal: ctx.signal })).trim();
  if (vermagic.split(' ')[0] !== release) throw new GuestError('E_DRIVER_INSTALL', `nvidia.ko built for ${release} has vermagic '${vermagic}'`);

  // the kernel's own modules NVIDIA's need, from the distribution's image package, indexed by depmod
  const imageDeb = readdirSync(join(root, WORK)).find((f) => f.startsWith(`linux-image-${release}_`) && f.endsWith('.deb'));
  if (!imageDeb) throw new GuestError('E_NOT_FOUND', `apt-get download linux-image-${release} left no .deb`);
  const unpacked = join(ctx.workDir, `image-${release}`);
  await runLogged(ctx.log, 'dpkg-deb', ['-x', join(root, WORK, imageDeb), unpacked], { signal: ctx.signal });
  const modulesRoot = ['lib', 'usr/lib'].map((d) => join(unpacked, d, 'modules', release)).find((d) => existsSync(d));
  if (!modulesRoot) throw new GuestError('E_NOT_FOUND', `${imageDeb} holds no lib/modules/${release}`);
  cpSync(ours, join(modulesRoot, 'updates', 'nvidia'), { recursive: true });
  // depmod -b BASE reads BASE/lib/modules/<release>
  await runLogged(ctx.log, 'depmod', ['-b', dirname(dirname(dirname(modulesRoot))), release], { signal: ctx.signal });
  const dependencies = moduleClosure(readFileSync(join(modulesRoot, 'modules.dep'), 'utf8'), built.map((f) => `updates/nvidia/${f}`));
  for (const dep of dependencies) {
    mkdirSync(dirname(join(out, dep)), { recursive: true });
    copyFileSync(join(modulesRoot, dep), join(out, dep));
  }
  for (const index of MODULE_INDEXES) if (existsSync(join(modulesRoot, index))) copyFileSync(join(modulesRoot, index), join(out, index));

  const headersDeb = readdirSync(join(root, 'var/cache/apt/archives')).find((f) => f.startsWith(`linux-headers-${release}_`));
  const version = (await chroot.run('dpkg-query', ['-W', '-f=${Version}', `linux-headers-${release}`], { capture: true })).trim();
  return {
    release,
    headers: { package: `linux-headers-${release}`, version, sha256: headersDeb ? await sha256File(join(root, 'var/cache/apt/archives', headersDeb)) : null },
    image: { package: `linux-image-${release}`, file: imageDeb, sha256: await sha256File(join(root, WORK, imageDeb)) },
    modules: findModules(out, 'updates'),
    dependencies,
  };
}

/** The kernel's modules the given ones need, from modules.dep (which lists each module's whole closure). */
export function moduleClosure(modulesDep: string, modules: string[]): string[] {
  const deps = new Map<string, string[]>();
  for (const line of modulesDep.split('\n')) {
    const m = /^([^:]+):\s*(.*)$/.exec(line);
    if (m) deps.set(m[1]!, m[2]!.split(/\s+/).filter(Boolean));
  }
  const wanted = new Set(modules);
  const closure = new Set<string>();
  for (const m of modules) for (const d of deps.get(m) ?? []) if (!wanted.has(d)) closure.add(d);
  return [...closure].sort();
}

/** apt's "Unable to locate package linux-headers-X" said as the vgpu.hostKernels release it comes from. */
async function kernelPackages(ctx: HostModulesContext, releases: string[], apt: () => Promise<unknown>): Promise<void> {
  try {
    await apt();
  } catch (err) {
    const said = ctx.log.tail(40).filter((l) => /Unable to locate package|has no installation candidate|^E: /.test(l));
    const missing = releases.filter((r) => said.some((l) => l.includes(r.split('=')[0]!)));
    if (!missing.length) throw err;
    throw new GuestError('E_NOT_FOUND', `vgpu.hostKernels ${missing.join(', ')}: the base's apt sources have no kernel packages for ${missing.length > 1 ? 'these releases' : 'this release'} (check it against the nodes' uname -r, a pinned =version against apt-cache policy, and that the base is the nodes' distribution)`, { cause: err, details: said });
  }
}
