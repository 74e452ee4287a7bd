import type { MatrixCombination, MatrixSection } from './matrix.js';
import type { SigningIdentity } from '../sys/module-signing.js';

/** The pipeline file, as data. README.md documents every field and its default. */
export interface Pipeline {
  /** Name of the pipeline: the folder under out/ and the prefix of task logs. */
  name: string;
  /** Which product line this is: picks the task layout and the artifact suffix. */
  vendor: 'nvidia' | 'intel' | 'nvidia-vgpu';
  /** The one source date (ISO 8601 or seconds since the epoch) that every step stamps into artifacts. */
  sourceDate: string;
  /** Required for nvidia and intel; nvidia-vgpu builds no guest kernel. */
  kernel: KernelSection;
  rootfs: RootfsSection;
  vgpu?: VgpuSection;
  driver?: DriverSection;
  toolkit?: ToolkitSection;
  image: ImageSection;
  /** Combinations of values `gpu-guest matrix` turns into CI jobs; build reads the pipeline's own values. */
  matrix?: MatrixSection;
}

export type KernelProfile = 'kata' | 'minimal';

export interface KernelSection {
  /** Exact version (`6.1.55`) or a range (`6.1`, `~6.1.50`, `>=6.1 <6.2`). */
  version: string;
  source: KernelSourceSection;
  /** Pinned sha256 of the tarball; wins over the mirror's sha256sums.asc. */
  sha256?: string;
  /** Keyring for `gpgv` to verify the clearsigned sha256sums.asc. Default: not verified. */
  keyring?: string;
  /**
   * A shipped base profile: `kata` (what the kata-agent and container workloads need; the default)
   * or `minimal` (the smallest guest that boots). Load turns it into baseConfig and profileFragments.
   */
  profile?: KernelProfile;
  /** Base config for the architecture: the profile's, or the user's own file instead of a profile. */
  baseConfig: string;
  /** Fragment folders of the profile, merged after the base and before `fragments`. Set by load. */
  profileFragments: string[];
  /**
   * The config the base and fragments are merged over: a kernel target (`tinyconfig`, the default,
   * `allnoconfig`, `defconfig`), or `base` when baseConfig is itself a complete .config.
   */
  startFrom: 'tinyconfig' | 'allnoconfig' | 'defconfig' | 'base';
  /** Fragment files or folders of `*.conf`, merged in order after the base. */
  fragments: string[];
  /** Symbols that may drop out of the final .config without failing the build. */
  allowDropped: string[];
  /** Suffix of the kernel release; must agree with CONFIG_LOCALVERSION in the fragments. */
  localVersion: string;
  /** Which packages kernel-debs makes: `deb` (bindeb-pkg) or `rpm` (binrpm-pkg). Default deb. */
  packages: 'deb' | 'rpm';
  /** KDEB_PKGVERSION. Default: `<version>-1`. */
  packageVersion?: string;
  /** Sign the kernel's and NVIDIA's modules with the user's key; the kernel trusts its certificate. */
  moduleSigning?: ModuleSigning;
}

export interface ModuleSigning {
  /** PEM private key (RSA or EC), unencrypted. */
  key: string;
  /** PEM X.509 certificate of that key. */
  certificate: string;
  hash: 'sha256' | 'sha384' | 'sha512';
  /** CONFIG_MODULE_SIG_FORCE: unsigned modules are refused. */
  enforce: boolean;
  /** Read from the key and certificate when the pipeline loads (not a pipeline key). */
  identity?: SigningIdentity;
}

export interface KernelSourceSection {
  /** kernel.org-style mirrors, tried in order. Default: https://cdn.kernel.org/pub/linux/kernel */
  mirrors?: string[];
  /** A local tarball path, an http(s) URL of a tarball, or `apt:<package>` (Debian's linux-source-X). */
  tarball?: string;
}

export interface RootfsSection {
  /** Recipe name under rootfs/ (`debian`, `ubuntu`). */
  distro: string;
  suite: string;
  /** `host` (the host's apt sources, when the distro matches) or a mirror URL (http, https, file). */
  mirror: string;
  components: string[];
  variant: string;
  /** Packages added to the recipe's base set. */
  packages: string[];
  /** Build-only packages (compiler, make …), purged after the driver is installed unless kept. */
  extraPackages: string[];
  keepBuildPackages: boolean;
}

/** A signed apt repository; key is a local keyring file. */
export interface AptRepository {
  url: string;
  suite: string;
  components: string[];
  key: string;
}

export interface DriverSection {
  version: string;
  /** URL of the .run; default the NVIDIA download layout for `version`. */
  url?: string;
  /** Local path of the .run; wins over url. */
  path?: string;
  /** The .run's pin: required for run and source, not read for apt. */
  sha256?: string;
  /**
   * How the kernel modules are built: `run` by nvidia-installer inside the rootfs (headers and a
   * compiler there), `source` on the host against the kernel-build tree (none in the guest),
   * `apt` by DKMS inside the rootfs from distribution packages (build-only packages purged).
   */
  source: 'run' | 'source' | 'apt';
  /**
   * source: a tarball of NVIDIA's kernel module source release (or of a kernel module tree with
   * NVIDIA's prebuilt cores); absent: the .run's own kernel-open/ or kernel/ tree.
   */
  moduleSource?: { mirrors?: string[]; url?: string; path?: string; sha256: string };
  moduleType: 'open' | 'proprietary';
  /** apt: the driver's packages, each pinned (`name=version`); exactly one is a DKMS package. */
  packages?: string[];
  /** apt: a signed repository; default the rootfs mirror's components the recipe names for drivers. */
  repository?: AptRepository;
  installerArgs: string[];
  /** Patch files (-p1) applied in order to the extracted driver before it is built. */
  patches: string[];
}

export interface ToolkitSection {
  version: string;
  /** Local .deb files or folders holding them. */
  debs: string[];
  repository?: AptRepository;
  /** `oci-hook` writes the Kata prestart hook; `cdi` generates CDI specs at boot. */
  mode: 'oci-hook' | 'cdi';
}

/** The vGPU manager container image (GPU Operator on KubeVirt nodes). */
export interface VgpuSection {
  /** Driver version; default: parsed from the .run's file name. */
  version?: string;
  /** Local NVIDIA-Linux-x86_64-<version>-vgpu-kvm.run (or -vgpu-kvm-aie.run). */
  path?: string;
  /** Or a URL of it. */
  url?: string;
  /** Required: an unverified driver is refused. */
  sha256: string;
  /** The nodes' os-release ID+VERSION_ID: ubuntu22.04, debian12, rhel9.4, rhcos4.14 …: picks the base, ends the tag. */
  osTag: string;
  /** Private registry and path, e.g. registry.example.com/nvidia. */
  registry: string;
  /** An OCI layout folder or oci-archive of your own base image (needed for rhel/rhcos tags). */
  baseImage?: string;
  /** builtin (no daemon) or an engine that builds dockerfileDir. Default builtin. */
  engine: 'builtin' | 'buildah' | 'podman' | 'docker';
  dockerfileDir?: string;
  /**
   * Node kernel releases (`uname -r`) to build NVIDIA's modules for when the image is built, with
   * the distribution's headers: the container then needs no headers and no network on those nodes.
   * `RELEASE=VERSION` pins the distribution's package version of its headers and image.
   */
  hostKernels: string[];
}

export interface ImageSection {
  format: 'ext4' | 'erofs' | 'initrd';
  /** Free space added to the content size, in MiB. Default 64. */
  marginMiB: number;
  /** A fixed image size in MiB instead of content + margin; too small is an error. */
  sizeMiB?: number;
  /** erofs only: a dm-verity hash tree appended to the image (measured rootfs). */
  verity: boolean;
}

/** A pipeline as loaded: the data plus where it came from, for messages and relative paths. */
export interface LoadedPipeline {
  pipeline: Pipeline;
  /** The matrix's combinations (none without a matrix:), checked at load. */
  combinations: MatrixCombination[];
  file: string;
  /** Folder that relative `./` and `../` paths resolve against. */
  baseDir: string;
}
