import { chmodSync, copyFileSync, cpSync, existsSync, mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import { GuestError } from '../../model/errors.js';
import type { Json } from '../../model/json.js';
import type { RootfsResult, VgpuHostModulesResult, VgpuImageResult } from '../../model/results.js';
import { ImageLayout, MEDIA, type Descriptor } from '../../sys/oci.js';
import { assertMakeselfArchive, checkMakeselfArchive } from '../../sys/makeself.js';
import { packRootfs } from '../../sys/rootfs-tar.js';
import { driverRunDownload, obtainDriverRun, preflightDriverRun } from '../nvidia/driver-run.js';
import type { StepContext, StepDefinition } from '../../model/step.js';
import { readBaseImage } from './base-image.js';
import { buildWithEngine } from './engine.js';
import { baseFitsTag, type OsRelease, vgpuReference } from './naming.js';

type VgpuParams = {
  version: string;
  sha256: string;
  url: string | null;
  /** The name the .run has inside the image (…-vgpu-kvm.run, also for an -aie file). */
  imageName: string;
  osTag: string;
  registry: string;
  engine: 'builtin' | 'buildah' | 'podman' | 'docker';
  sourceDate: number;
};
/** The rootfs role is absent when the user brings a base image or an engine builds the image. */
type VgpuInputs = { rootfs?: RootfsResult; hostModules?: VgpuHostModulesResult };
type VgpuContext = StepContext<VgpuParams, VgpuInputs>;

const PATH_ENV = 'PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

/**
 * vgpu-image: the GPU Operator's vGPU manager image as an OCI image layout and oci-archive, built
 * without a daemon: the base rootfs (or the user's own base image), then one layer with the .run
 * under /driver/ and the nvidia-driver entrypoint. Layers are reproducible from the source date.
 */
export const vgpuImage: StepDefinition<VgpuParams, VgpuInputs, VgpuImageResult> = {
  kind: 'vgpu-image',
  version: 4,
  resources: { cpu: 1 },
  publish: 'vgpu-manager',
  preflight: (p, _files, ctx) => preflightDriverRun(ctx, { path: ctx.locations.run, url: p.url, version: p.version, sha256: p.sha256, what: 'vGPU driver', key: 'vgpu.version' }),
  downloads: (p, task) => driverRunDownload({ path: task.locations?.run, url: p.url, version: p.version, sha256: p.sha256, what: 'vGPU driver', suffix: '-vgpu-kvm' }),
  run: (ctx) => buildVgpuImage(ctx),
};

async function buildVgpuImage(ctx: VgpuContext): Promise<VgpuImageResult> {
  const p = ctx.params;
  const ref = vgpuReference(p.registry, p.version, p.osTag);
  const run = await obtainDriverRun(ctx, { path: ctx.locations.run, url: p.url, version: p.version, sha256: p.sha256, what: 'vGPU driver', suffix: '-vgpu-kvm' });
  assertMakeselfArchive(run, 'vGPU driver');
  await checkMakeselfArchive(ctx.log, run, 'vGPU driver', ctx.signal);
  const archive = join(ctx.outDir, 'vgpu-manager.oci.tar');
  const layoutDir = join(ctx.outDir, 'layout');
  const built = { reference: ref.reference, repository: ref.repository, tag: ref.tag, engine: p.engine, layout: 'layout', archive: basename(archive), driverVersion: p.version };
  if (p.engine !== 'builtin') {
    const digest = await buildWithEngine(ctx, { engine: p.engine, dockerfileDir: ctx.locations.dockerfileDir, run, imageName: p.imageName, version: p.version, reference: ref.reference, archive, layoutDir });
    writeFileSync(join(ctx.outDir, 'digest'), `${digest}\n`);
    return { ...built, manifestDigest: digest };
  }
  const layout = new ImageLayout(layoutDir);
  const base = ctx.locations.baseImage ? await readBaseImage(ctx, ctx.locations.baseImage, layout) : await baseFromRootfs(ctx, layout);
  if (ctx.locations.baseImage) checkBaseOs(ctx.locations.baseImage, base.osRelease, p.osTag);
  const driverLayer = await layout.addLayer(await driverLayerTar(ctx, run, p.imageName, ctx.upstream.hostModules));
  const created = new Date(ctx.sourceDate * 1000).toISOString().replace(/\.000Z$/, 'Z');
  const labels = {
    'org.opencontainers.image.title': 'vgpu-manager',
    'org.opencontainers.image.version': `${p.version}-${p.osTag}`,
    'org.opencontainers.image.created': created,
    'org.opencontainers.image.source': 'gpu-guest',
    'org.opencontainers.image.description': `NVIDIA vGPU manager ${p.version} for the GPU Operator (${p.osTag})`,
    'com.nvidia.driver.version': p.version,
  };
  const env = [...base.env.filter((e) => !/^(PATH|DRIVER_VERSION)=/.test(e)), PATH_ENV, `DRIVER_VERSION=${p.version}`];
  const config = {
    created,
    architecture: 'amd64',
    os: 'linux',
    config: { Entrypoint: ['nvidia-driver', 'init'], Env: env, Labels: labels, WorkingDir: '/' },
    rootfs: { type: 'layers', diff_ids: [...base.diffIds, driverLayer.diffId] },
    history: [...base.history, { created, created_by: `gpu-guest vgpu-image: /driver/${p.imageName} and nvidia-driver` }],
  };
  const configDesc = layout.addJson(MEDIA.config, config as unknown as Json);
  const manifest = { schemaVersion: 2, mediaType: MEDIA.manifest, config: configDesc, layers: [...base.layers, driverLayer.descriptor], annotations: { 'org.opencontainers.image.created': created } };
  const manifestDesc: Descriptor = layout.addJson(MEDIA.manifest, manifest as unknown as Json);
  layout.writeIndex(manifestDesc, ref.tag);
  await packRootfs(ctx.log, layout.dir, archive, ctx.sourceDate, ctx.signal);
  writeFileSync(join(ctx.outDir, 'digest'), `${manifestDesc.digest}\n`);
  ctx.log.info(`${ref.reference} ${manifestDesc.digest}`);
  return { ...built, manifestDigest: manifestDesc.digest };
}

/** The GPU Operator pulls the image on nodes of vgpu.osTag: its base must be that system (see baseFitsTag). */
function checkBaseOs(path: string, release: Partial<OsRelease> | null, osTag: string): void {
  if (!release?.ID || release.VERSION_ID === undefined) {
    throw new GuestError('E_BASE_IMAGE', `vgpu.baseImage ${path} has no /etc/os-release with ID and VERSION_ID: the vGPU manager's base must be the nodes' OS (vgpu.osTag ${osTag})`);
  }
  if (!baseFitsTag(osTag, release as OsRelease)) {
    throw new GuestError('E_BASE_IMAGE', `vgpu.baseImage ${path} is ${release.ID} ${release.VERSION_ID} (its os-release), but vgpu.osTag ${osTag} is for other nodes: use a base of the nodes' OS, or set vgpu.osTag to theirs`);
  }
}

/** The base layer: the rootfs task's reproducible tarball as it is. */
async function baseFromRootfs(ctx: VgpuContext, layout: ImageLayout) {
  const rootfs = ctx.upstream.rootfs;
  if (!rootfs) throw new GuestError('E_PIPELINE_INVALID', 'vgpu-image needs a base: the rootfs task or vgpu.baseImage');
  const layer = await layout.addLayer(join(rootfs.dir, 'rootfs.tar'));
  const created = new Date(ctx.sourceDate * 1000).toISOString().replace(/\.000Z$/, 'Z');
  return { layers: [layer.descriptor], osRelease: null, diffIds: [layer.diffId], env: [] as string[], history: [{ created, created_by: `gpu-guest rootfs ${String(rootfs.result.distro)} ${String(rootfs.result.suite)}` }] };
}

/**
 * /driver/<name>.run, /usr/local/bin/nvidia-driver and, with vgpu.hostKernels, /driver/prebuilt/<release>/
 * (what nvidia-driver puts at /lib/modules/<release>), packed reproducibly.
 */
async function driverLayerTar(ctx: VgpuContext, run: string, imageName: string, hostModules: VgpuContext['upstream']['hostModules']): Promise<string> {
  const stage = join(ctx.workDir, 'driver-layer');
  mkdirSync(join(stage, 'driver'), { recursive: true });
  if (hostModules) cpSync(join(hostModules.dir, hostModules.result.folder), join(stage, 'driver', 'prebuilt'), { recursive: true });
  mkdirSync(join(stage, 'usr/local/bin'), { recursive: true });
  copyFileSync(run, join(stage, 'driver', imageName));
  chmodSync(join(stage, 'driver', imageName), 0o755);
  const entrypoint = ctx.files.entrypoint as string;
  if (!existsSync(entrypoint) || !statSync(entrypoint).isFile()) throw new GuestError('E_INPUT_NOT_FOUND', `entrypoint ${entrypoint} is missing from the gpu-guest installation`);
  writeFileSync(join(stage, 'usr/local/bin/nvidia-driver'), readFileSync(entrypoint));
  chmodSync(join(stage, 'usr/local/bin/nvidia-driver'), 0o755);
  const tar = join(ctx.workDir, 'driver-layer.tar');
  await packRootfs(ctx.log, stage, tar, ctx.sourceDate, ctx.signal);
  return tar;
}
