import { resolve } from 'node:path';
import { DEFAULT_KERNEL_MIRROR, DEFAULT_MODULE_SOURCE_MIRROR } from './schema.js';
import { withoutUndefined as clean } from '../model/json.js';
import type { TaskGraph, TaskSpec } from '../model/task.js';
import { projectRoot } from '../paths.js';
import type { Pipeline } from './types.js';
import { nvidiaKernelNeeds } from '../steps/nvidia/kernel-needs.js';

/** Seconds since the epoch for the pipeline's sourceDate (an ISO date or a number of seconds). */
export function sourceDateEpoch(p: Pipeline): number {
  if (/^\d+$/.test(p.sourceDate)) return Number(p.sourceDate);
  return Math.floor(Date.parse(p.sourceDate) / 1000);
}

/** Extra fragments given on the command line (`--fragment`), appended after the pipeline's. */
export interface CompileOptions {
  extraFragments?: string[];
}

/**
 * Turns a pipeline into its task graph. Pure: reads no file and runs nothing. Local paths go into
 * `files` (their content is keyed, not their location); everything else into `params`.
 */
export function compileTaskGraph(p: Pipeline, options: CompileOptions = {}): TaskGraph {
  if (p.vendor === 'nvidia-vgpu') return compileVgpuGraph(p);
  const sourceDate = sourceDateEpoch(p);
  const k = p.kernel;
  const suffix = k.localVersion;
  const tarball = k.source.tarball;
  const localTarball = tarball !== undefined && !/^(https?:\/\/|apt:)/.test(tarball);
  const signing = k.moduleSigning;
  const signingFiles: TaskSpec['files'] = signing ? { signingKey: signing.key, signingCertificate: signing.certificate } : {};
  // the driver tasks sign NVIDIA's modules after stripping them, with the kernel build's sign-file
  const driverSigning: DriverSigning = signing
    ? { upstream: { build: 'kernel-build' }, params: { signing: { hash: signing.hash, signer: signing.identity!.signer } }, files: signingFiles }
    : { upstream: {}, params: {}, files: {} };
  const tasks: TaskSpec[] = [
    {
      id: 'kernel-source',
      kind: 'kernel-source',
      upstream: {},
      title: `fetch and verify the Linux ${k.version} source`,
      params: clean({
        version: k.version,
        mirrors: tarball ? null : (k.source.mirrors ?? [DEFAULT_KERNEL_MIRROR]),
        tarball: localTarball ? null : (tarball ?? null),
        sha256: k.sha256 ?? null,
      }),
      files: clean({ tarball: localTarball ? tarball : undefined, keyring: k.keyring }) as TaskSpec['files'],
    },
    {
      id: 'kernel-config',
      kind: 'kernel-config',
      upstream: { source: 'kernel-source' },
      title: `merge the ${k.profile ? `${k.profile} profile` : 'base config'} and ${k.fragments.length + (options.extraFragments?.length ?? 0)} fragment(s)`,
      params: { localVersion: suffix, startFrom: k.startFrom, allowDropped: k.allowDropped.map((s) => s.replace(/^CONFIG_/, '')).sort(), ...(signing ? { moduleSigning: { hash: signing.hash, enforce: signing.enforce, keyType: signing.identity!.keyType } } : {}), ...(p.vendor === 'nvidia' && p.driver ? { driverNeeds: nvidiaKernelNeeds(p.driver.moduleType) } : {}) },
      files: { baseConfig: k.baseConfig, fragments: [...k.profileFragments, ...k.fragments, ...(options.extraFragments ?? [])] },
    },
    {
      id: 'kernel-build',
      kind: 'kernel-build',
      upstream: { source: 'kernel-source', config: 'kernel-config' },
      title: `build the ${suffix.slice(1)} kernel`,
      params: { localVersion: suffix, sourceDate },
      // the key signs the kernel's modules (and its certificate is built in): its content is keyed
      files: signingFiles,
    },
    {
      id: 'kernel-debs',
      kind: 'kernel-debs',
      // the source: kbuild reads it again when packaging (see kernelTreePaths)
      upstream: { source: 'kernel-source', build: 'kernel-build' },
      title: `package the kernel as ${k.packages === 'rpm' ? 'RPMs' : 'debs'}`,
      params: clean({ format: k.packages, packageVersion: k.packageVersion ?? null, sourceDate }),
      files: {},
    },
    rootfsTask(p, p.vendor === 'nvidia' ? p.rootfs.extraPackages : []),
  ];
  let lastRootfsTask = 'rootfs';
  if (p.vendor === 'nvidia' && p.driver && p.toolkit) {
    const d = p.driver;
    const runUrl = d.path ? null : (d.url ?? null);
    // patches change what is built: their contents (in order) are part of the key
    const patches: TaskSpec['files'] = d.patches.length ? { patches: d.patches } : {};
    const fromSource = d.source === 'source';
    if (fromSource) tasks.push(driverModulesTask(d, runUrl, patches));
    if (d.source === 'run') tasks.push(buildRootTask(p), installerModulesTask(d, runUrl, patches));
    if (d.source === 'apt') tasks.push(driverPackagesTask(p, d, patches, driverSigning));
    else tasks.push({
      id: 'driver',
      kind: 'driver',
      upstream: { packages: 'kernel-debs', rootfs: 'rootfs', modules: 'driver-modules', ...driverSigning.upstream },
      title: `install the NVIDIA ${d.version} modules, firmware and user-mode driver in the rootfs`,
      // The pinned sha256 is the .run's identity: its path or URL does not change the result.
      params: { version: d.version, sha256: d.sha256!, url: runUrl, ...(fromSource ? { source: 'source' } : {}), moduleType: d.moduleType, installerArgs: d.installerArgs, ...driverSigning.params },
      files: driverSigning.files,
      ...(d.path ? { locations: { run: d.path } } : {}),
    });
    const t = p.toolkit;
    tasks.push({
      id: 'toolkit',
      kind: 'toolkit',
      // from a repository, the lock pins what apt adds to the base rootfs
      upstream: { driver: 'driver', ...(t.repository && !t.debs?.length ? { base: 'rootfs' } : {}) },
      title: `install the NVIDIA container toolkit ${t.version}`,
      params: {
        version: t.version,
        mode: t.mode,
        repository: t.repository ? { url: t.repository.url, suite: t.repository.suite, components: t.repository.components } : null,
        purge: p.rootfs.keepBuildPackages ? [] : p.rootfs.extraPackages,
        keepHeaders: p.rootfs.keepBuildPackages,
      },
      files: clean({ debs: t.debs, repositoryKey: t.repository && !/^https?:/.test(t.repository.key) ? t.repository.key : undefined, recipe: resolve(projectRoot, 'rootfs', p.rootfs.distro) }) as TaskSpec['files'],
    });
    lastRootfsTask = 'toolkit';
  }
  tasks.push({
    id: 'image',
    kind: 'image',
    upstream: { rootfs: lastRootfsTask },
    title: `make the ${p.image.format} guest image`,
    params: { format: p.image.format, marginMiB: p.image.marginMiB, sizeMiB: p.image.sizeMiB ?? null, ...(p.image.verity ? { verity: true } : {}), flavour: suffix.slice(1), vendor: p.vendor, sourceDate },
    files: { recipe: resolve(projectRoot, 'rootfs', p.rootfs.distro) },
  });
  tasks.push({
    id: 'sbom',
    kind: 'sbom',
    // the base rootfs too, when later tasks changed it: the toolkit step's cleanup drops /usr/share/doc, the licences' source
    upstream: { image: 'image', rootfs: lastRootfsTask, ...(lastRootfsTask !== 'rootfs' ? { base: 'rootfs' } : {}), kernel: 'kernel-debs', source: 'kernel-source', ...(tasks.some((t) => t.id === 'driver') ? { driver: 'driver' } : {}) },
    title: 'write the SPDX bill of materials of the guest',
    params: { pipeline: p.name, distro: p.rootfs.distro, suite: p.rootfs.suite },
    files: {},
  });
  return { pipeline: p.name, tasks };
}

/** driver.source: source — NVIDIA's modules built on the host against the kernel-build tree. */
function driverModulesTask(d: NonNullable<Pipeline['driver']>, runUrl: string | null, patches: TaskSpec['files']): TaskSpec {
  const m = d.moduleSource;
  const name = `NVIDIA-kernel-module-source-${d.version}.tar.xz`;
  const urls = m?.url ? [m.url] : (m?.mirrors ?? [DEFAULT_MODULE_SOURCE_MIRROR]).map((base) => `${base.replace(/\/$/, '')}/${name}`);
  const locations = { ...(m?.path ? { tarball: m.path } : {}), ...(!m && d.path ? { run: d.path } : {}) };
  return {
    id: 'driver-modules',
    kind: 'driver-modules',
    upstream: { source: 'kernel-source', build: 'kernel-build' },
    title: `build the NVIDIA ${d.version} ${d.moduleType} kernel modules against the kernel tree`,
    params: { version: d.version, moduleType: d.moduleType, run: { sha256: d.sha256!, url: runUrl }, tarball: m ? { urls: m.path ? [] : urls, sha256: m.sha256 } : null },
    files: patches,
    ...(Object.keys(locations).length ? { locations } : {}),
  };
}

/**
 * driver.source: run — the root nvidia-installer builds the modules in: the guest's distro and
 * suite with the recipe's base packages and the build-only ones (rootfs.extraPackages), none of
 * the guest's own packages, so a change to those leaves the modules built.
 */
function buildRootTask(p: Pipeline): TaskSpec {
  const task = rootfsTask(p, p.rootfs.extraPackages);
  return { ...task, id: 'build-root', title: `create the ${p.rootfs.distro} ${p.rootfs.suite} build root nvidia-installer builds the modules in`, params: { ...task.params, packages: [] } };
}

/** driver.source: run — nvidia-installer builds NVIDIA's modules in the build root. */
function installerModulesTask(d: NonNullable<Pipeline['driver']>, runUrl: string | null, patches: TaskSpec['files']): TaskSpec {
  return {
    id: 'driver-modules',
    kind: 'installer-modules',
    upstream: { packages: 'kernel-debs', root: 'build-root' },
    title: `build the NVIDIA ${d.version} ${d.moduleType} kernel modules with nvidia-installer in the build root`,
    params: { version: d.version, sha256: d.sha256!, url: runUrl, moduleType: d.moduleType, installerArgs: d.installerArgs },
    files: patches,
    ...(d.path ? { locations: { run: d.path } } : {}),
  };
}

/** What kernel.moduleSigning adds to a driver task: the kernel build (its sign-file), the hash and signer, the key files. */
type DriverSigning = { upstream: Record<string, string>; params: TaskSpec['params']; files: TaskSpec['files'] };

/** driver.source: apt — the driver's pinned packages in the rootfs, DKMS building the modules there. */
function driverPackagesTask(p: Pipeline, d: NonNullable<Pipeline['driver']>, patches: TaskSpec['files'], signing: DriverSigning): TaskSpec {
  const repo = d.repository;
  return {
    id: 'driver',
    kind: 'driver-packages',
    upstream: { packages: 'kernel-debs', rootfs: 'rootfs', ...signing.upstream },
    title: `install the NVIDIA ${d.version} driver packages in the rootfs (DKMS builds the modules)`,
    params: { version: d.version, moduleType: d.moduleType, packages: d.packages ?? [], repository: repo ? { url: repo.url, suite: repo.suite, components: repo.components } : null, ...signing.params },
    // the keyring's contents, like the patches', are part of the key
    files: clean({ ...patches, ...signing.files, repositoryKey: repo?.key, recipe: resolve(projectRoot, 'rootfs', p.rootfs.distro) }) as TaskSpec['files'],
  };
}

function rootfsTask(p: Pipeline, extraPackages: string[]): TaskSpec {
  return {
    id: 'rootfs',
    kind: 'rootfs',
    upstream: {},
    title: `create the ${p.rootfs.distro} ${p.rootfs.suite} root filesystem`,
    params: {
      distro: p.rootfs.distro,
      suite: p.rootfs.suite,
      mirror: p.rootfs.mirror,
      components: p.rootfs.components,
      variant: p.rootfs.variant,
      packages: p.rootfs.packages,
      extraPackages,
      sourceDate: sourceDateEpoch(p),
    },
    files: { recipe: resolve(projectRoot, 'rootfs', p.rootfs.distro) },
  };
}

/** The tools a host driver install needs in the vGPU manager image. */
export const VGPU_TOOLS = ['gcc', 'make', 'kmod', 'pciutils', 'procps', 'ca-certificates'];

/** nvidia-vgpu: the base rootfs (unless the user brings a base image), then the image. */
function compileVgpuGraph(p: Pipeline): TaskGraph {
  const v = p.vgpu!;
  const tasks: TaskSpec[] = [];
  if (!v.baseImage && v.engine === 'builtin') {
    const base = rootfsTask(p, []);
    base.params.packages = [...new Set([...p.rootfs.packages, ...VGPU_TOOLS])].sort();
    tasks.push(base);
  }
  const name = v.path ? v.path.split('/').pop()! : v.url ? new URL(v.url).pathname.split('/').pop()! : `NVIDIA-Linux-x86_64-${v.version}-vgpu-kvm.run`;
  const upstream: TaskSpec['upstream'] = tasks.length ? { rootfs: 'rootfs' } : {};
  if (v.hostKernels.length) {
    tasks.push({
      id: 'vgpu-host-modules',
      kind: 'vgpu-host-modules',
      upstream: { rootfs: 'rootfs' },
      title: `build the NVIDIA ${v.version} modules for the node kernels ${v.hostKernels.map((k) => k.split('=')[0]).join(', ')}`,
      params: { version: v.version!, sha256: v.sha256, url: v.path ? null : (v.url ?? null), releases: [...v.hostKernels].sort() },
      files: { recipe: resolve(projectRoot, 'rootfs', p.rootfs.distro) },
      ...(v.path ? { locations: { run: v.path } } : {}),
    });
    upstream.hostModules = 'vgpu-host-modules';
  }
  tasks.push({
    id: 'vgpu-image',
    kind: 'vgpu-image',
    upstream,
    title: `build the vGPU manager image ${v.registry}/vgpu-manager:${v.version}-${v.osTag}`,
    params: {
      version: v.version!,
      sha256: v.sha256,
      url: v.path ? null : (v.url ?? null),
      imageName: name.replace(/-vgpu-kvm-aie\.run$/, '-vgpu-kvm.run'),
      osTag: v.osTag,
      registry: v.registry,
      engine: v.engine,
      sourceDate: sourceDateEpoch(p),
    },
    files: clean({ entrypoint: resolve(projectRoot, 'vgpu-manager', 'nvidia-driver'), baseImage: v.baseImage, dockerfile: v.dockerfileDir }) as TaskSpec['files'],
    locations: clean({ run: v.path, baseImage: v.baseImage, dockerfileDir: v.dockerfileDir }) as { [role: string]: string },
  });
  return { pipeline: p.name, tasks };
}
