/**
 * What each step kind returns: recorded in its cache entry and handed, typed, to the steps and
 * commands that read it. Type aliases (not interfaces) so that they are JSON objects.
 */

export type KernelSourceResult = {
  /** The Linux version the tarball's Makefile names. */
  version: string;
  sha256: string;
  /** Where the tarball came from (URLs redacted). */
  origin: string;
  topDir: string;
};

export type KernelConfigResult = {
  fragments: string[];
  requested: number;
  enabled: number;
  allowedDrops: string[];
};

export type KernelBuildResult = {
  kernelRelease: string;
  /** The key of the build, which names its stable object-tree path. */
  buildKey: string;
  version: string | null;
  flavour: string;
  modules: boolean;
  /** The kernel image file in the entry (vmlinuz-<release>). */
  image: string;
  /** The compiler command the tree was built with (`ccache gcc` or `gcc`): later makes on it must use the same. */
  compiler?: string;
};

export type PackageFile = { file: string; package: string; version: string; architecture: string; sha256: string };

export type KernelPackagesResult = {
  kernelRelease: string;
  format: 'deb' | 'rpm';
  packages: PackageFile[];
  /** The headers package name, when the kernel has modules. */
  headers?: string | null;
};

/** Any task whose entry holds a root filesystem tarball that a later task continues from. */
export type RootfsTarballResult = {
  /** The tarball's name in the entry. */
  tarball: string;
  kernelRelease?: string | null;
};

export type RootfsResult = RootfsTarballResult & {
  distro: string;
  suite: string;
  mirror: string;
  packages: string[];
  builder: 'mmdebstrap' | 'debootstrap';
};

export type DriverResult = RootfsTarballResult & {
  driverVersion: string;
  label: string;
  kernelRelease: string;
  moduleType: 'open' | 'proprietary';
  /** Module paths relative to /lib/modules/<release>. */
  modules: string[];
  /** Where the modules were built: by nvidia-installer in the rootfs (run), on the host (source), by DKMS from packages (apt). */
  source?: 'run' | 'source' | 'apt';
  /** apt: the driver's packages as pinned, and the build-only packages purged afterwards. */
  packages?: string[];
  purged?: string[];
  /** Module file name → the name modprobe loads it by, where a distribution renames them (nvidia-current → nvidia). */
  loadNames?: Record<string, string>;
  /** kernel.moduleSigning: the signer modinfo shows for every NVIDIA module. */
  signer?: string;
};

/** NVIDIA's kernel modules built on the host against the kernel-build tree (driver.source: source). */
export type DriverModulesResult = {
  driverVersion: string;
  kernelRelease: string;
  moduleType: 'open' | 'proprietary';
  /**
   * What was built: on the host, the .run's own tree, a tree with NVIDIA's prebuilt cores, or the
   * full source release; or (installer) by nvidia-installer from the .run in the build root.
   */
  from: 'run' | 'tree' | 'release' | 'installer';
  /** The file the modules came from (the .run or the source tarball). */
  sourceFile: string;
  /** Folder in the entry laid out as the rootfs: lib/modules/<release>/… */
  tree: string;
  /** Module paths relative to lib/modules/<release>. */
  modules: string[];
};

export type ToolkitResult = RootfsTarballResult & {
  toolkitVersion: string;
  mode: 'oci-hook' | 'cdi';
  packages: string[];
  source: string;
  purged: string[];
  sizeBeforeBytes: number;
  sizeAfterBytes: number;
  kernelRelease: string;
};

/** The dm-verity hash tree appended to an erofs image, and how to boot it. */
export type VerityResult = {
  rootHash: string;
  salt: string;
  algorithm: 'sha256';
  dataBlocks: number;
  dataBlockSize: number;
  hashBlockSize: number;
  /** In hash blocks from the start of the image: the tree follows the data. */
  hashStartBlock: number;
  /** dm-mod.create=… root=/dev/dm-0: the image (as /dev/vda) mapped through dm-verity as root. */
  kernelParams: string;
};

export type ImageResult = {
  /** Path of the image in the entry (rootfs/kata-containers-<flavour>.img). */
  image: string;
  format: 'ext4' | 'erofs' | 'initrd';
  sizeMiB: number | null;
  /** Bytes of the image file (with its verity tree): what the guest's disk costs. */
  imageBytes?: number;
  verity?: VerityResult;
  contentBytes: number;
  uuid: string;
  kata: string;
  kernelRelease: string | null;
};

/** The guest's SPDX document and what it counted. */
export type SbomResult = {
  /** The document's name in the entry (sbom.spdx.json). */
  sbom: string;
  /** Packages dpkg installed in the guest, and how many of them have a licence their copyright file declares. */
  packages: number;
  licensed: number;
  distro: string;
};

export type VgpuImageResult = {
  /** registry/vgpu-manager:tag */
  reference: string;
  /** registry/vgpu-manager */
  repository: string;
  tag: string;
  manifestDigest: string;
  engine: 'builtin' | 'buildah' | 'podman' | 'docker';
  /** The OCI image layout folder in the entry. */
  layout: string;
  /** The oci-archive file in the entry. */
  archive: string;
  driverVersion: string;
};

/** vgpu.hostKernels: NVIDIA's modules prebuilt per node kernel, with what they need of the kernel's. */
export type VgpuHostModulesResult = {
  driverVersion: string;
  /** The folder in the entry: <folder>/<release>/ is laid out as /lib/modules/<release>/. */
  folder: string;
  releases: {
    release: string;
    /** The distribution's headers package it was built against. */
    headers: { package: string; version: string; sha256: string | null };
    /** The distribution's image package the kernel's own modules come from. */
    image: { package: string; file: string; sha256: string };
    /** NVIDIA's, relative to <folder>/<release>/ (updates/nvidia/…). */
    modules: string[];
    /** The kernel's modules NVIDIA's depend on, relative to <folder>/<release>/. */
    dependencies: string[];
  }[];
};

/** The result type of every built-in step kind, by kind. */
export type StepResults = {
  'kernel-source': KernelSourceResult;
  'kernel-config': KernelConfigResult;
  'kernel-build': KernelBuildResult;
  'kernel-debs': KernelPackagesResult;
  rootfs: RootfsResult;
  driver: DriverResult;
  'driver-modules': DriverModulesResult;
  'installer-modules': DriverModulesResult;
  'driver-packages': DriverResult;
  toolkit: ToolkitResult;
  image: ImageResult;
  sbom: SbomResult;
  'vgpu-image': VgpuImageResult;
  'vgpu-host-modules': VgpuHostModulesResult;
};
