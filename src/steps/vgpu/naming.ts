import { GuestError } from '../../model/errors.js';

/** The base each GPU Operator os tag stands for; rhel/rhcos bases come from the user's own OCI image. */
export interface OsBase {
  tag: string;
  distro?: 'ubuntu' | 'debian';
  suite?: string;
  /** RHEL-family bases cannot be debootstrapped: vgpu.baseImage is required. */
  needsBaseImage: boolean;
}

const UBUNTU: Record<string, string> = { 'ubuntu20.04': 'focal', 'ubuntu22.04': 'jammy', 'ubuntu24.04': 'noble' };
// the GPU Operator's tag is the node's os-release ID + VERSION_ID: debian12 on a bookworm node
const DEBIAN: Record<string, string> = { debian11: 'bullseye', debian12: 'bookworm', debian13: 'trixie' };

export function osBase(tag: string): OsBase {
  if (UBUNTU[tag]) return { tag, distro: 'ubuntu', suite: UBUNTU[tag], needsBaseImage: false };
  if (DEBIAN[tag]) return { tag, distro: 'debian', suite: DEBIAN[tag], needsBaseImage: false };
  // the operator's tag is os-release ID + VERSION_ID: rhel9.4 on a RHEL 9.4 node, rhcos4.14 on OpenShift 4.14
  if (/^(rhel\d+\.\d+|rhcos4\.\d+)$/.test(tag)) return { tag, needsBaseImage: true };
  throw new GuestError('E_PIPELINE_INVALID', `vgpu.osTag '${tag}' is not one the GPU Operator uses (ubuntu20.04, ubuntu22.04, ubuntu24.04, debian11, debian12, debian13, rhel<major>.<minor> such as rhel9.4, rhcos4.<n>: the node's os-release ID and VERSION_ID)`);
}

/** os-release's ID and VERSION_ID. */
export interface OsRelease {
  ID: string;
  VERSION_ID: string;
}

/**
 * Whether a base whose os-release says `release` is right for nodes of `tag`: ubuntu and debian tags
 * are the node's ID + VERSION_ID exactly; rhel<N>.<M> needs a RHEL <N>.x base (NVIDIA builds on UBI <N>); an rhcos tag a RHEL base
 * (NVIDIA builds its OpenShift images on UBI, which says ID=rhel).
 */
export function baseFitsTag(tag: string, release: OsRelease): boolean {
  if (/^rhcos/.test(tag)) return release.ID === 'rhel';
  const rhel = /^rhel(\d+)\.\d+$/.exec(tag);
  if (rhel) return release.ID === 'rhel' && release.VERSION_ID.split('.')[0] === rhel[1];
  return `${release.ID}${release.VERSION_ID}` === tag;
}

/** KEY=value lines, values unquoted. */
export function parseOsRelease(text: string): Partial<OsRelease> {
  const out: Record<string, string> = {};
  for (const line of text.split('\n')) {
    const m = /^([A-Z_]+)=(.*)$/.exec(line.trim());
    if (m) out[m[1]!] = m[2]!.replace(/^(["'])(.*)\1$/, '$2');
  }
  return out;
}

/**
 * Version from NVIDIA-Linux-x86_64-<version>-vgpu-kvm.run; the AI Enterprise file
 * …-vgpu-kvm-aie.run is accepted and used under the -vgpu-kvm.run name.
 */
export function parseVgpuRunName(name: string): { version: string; imageName: string; aie: boolean } {
  const m = /^NVIDIA-Linux-x86_64-(\d+(?:\.\d+)+)-vgpu-kvm(-aie)?\.run$/.exec(name);
  if (!m) {
    throw new GuestError('E_VGPU_NAME', `${name} is not a vGPU host driver name (expected NVIDIA-Linux-x86_64-<version>-vgpu-kvm.run or …-vgpu-kvm-aie.run; rename it or set vgpu.version)`);
  }
  return { version: m[1]!, imageName: `NVIDIA-Linux-x86_64-${m[1]}-vgpu-kvm.run`, aie: Boolean(m[2]) };
}

/** `registry.example.com[:port]/path`: a registry host with an optional repository path. */
export function checkRegistry(registry: string): string {
  const ok = /^(localhost|[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*)(:\d{1,5})?(\/[a-z0-9]+([._-][a-z0-9]+)*)*$/.test(registry);
  if (!ok) {
    throw new GuestError('E_PIPELINE_INVALID', `vgpu.registry '${registry}' is not a registry reference (expected host[:port][/path] in lower case, e.g. registry.example.com/nvidia, without a scheme or tag)`);
  }
  return registry;
}

/** `<registry>/vgpu-manager:<version>-<os tag>` */
export function vgpuReference(registry: string, version: string, osTag: string): { repository: string; tag: string; reference: string } {
  const repository = `${registry}/vgpu-manager`;
  const tag = `${version}-${osTag}`;
  return { repository, tag, reference: `${repository}:${tag}` };
}
