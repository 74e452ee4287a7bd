/**
 * JSON Schema of a pipeline file. Unknown keys are errors everywhere (`additionalProperties: false`):
 * a typo must never be silently ignored. Defaults live here so that `plan --json` shows them.
 */
const str = { type: 'string', minLength: 1 } as const;
const strList = { type: 'array', items: str, default: [] } as const;
const sha256 = { type: 'string', pattern: '^[0-9a-f]{64}$' } as const;

// Debian's grammar (Policy 5.6.1, sources.list(5)): values that reach apt, mmdebstrap and sources
// lines are checked here, at load time, so no shell or apt ever sees `$(…)`, `;` or a stray `/`.
const DEBIAN_PACKAGE = '^[a-z0-9][a-z0-9+.-]+(:[a-z0-9-]+)?(=[A-Za-z0-9.+~:-]+)?$';
const DEBIAN_SUITE = '^(/|[A-Za-z0-9][A-Za-z0-9._+~-]*(/[A-Za-z0-9._+~-]+)*/?)$';
const DEBIAN_COMPONENT = '^[A-Za-z0-9][A-Za-z0-9._+-]*(/[A-Za-z0-9._+-]+)*$';
const packageList = { type: 'array', items: { type: 'string', pattern: DEBIAN_PACKAGE }, default: [] } as const;

/** What a pattern means, for error messages that a person can act on. */
export const PATTERN_MEANING: Record<string, string> = {
  [DEBIAN_PACKAGE]: 'a Debian package name (lowercase letters, digits, + - .; optionally :arch and =version)',
  [DEBIAN_SUITE]: 'a Debian suite or codename (letters, digits, . _ + ~ -), or / for a flat repository',
  [DEBIAN_COMPONENT]: 'a Debian archive component (letters, digits, . _ + -)',
  '^[0-9a-f]{64}$': 'a sha256 (64 lowercase hex digits)',
};

/** A signed apt repository: a sources line's URL, suite and components, and the keyring that signs it. */
const aptRepository = {
  type: 'object',
  additionalProperties: false,
  required: ['url', 'suite', 'key'],
  properties: {
    url: { type: 'string', pattern: '^(https?|file)://' },
    suite: { type: 'string', pattern: DEBIAN_SUITE },
    components: { type: 'array', items: { type: 'string', pattern: DEBIAN_COMPONENT }, default: ['main'] },
    key: str,
  },
} as const;

export const DEFAULT_KERNEL_MIRROR = 'https://cdn.kernel.org/pub/linux/kernel';
/** NVIDIA's download folder of its kernel module source releases (NVIDIA-kernel-module-source-<version>.tar.xz). */
export const DEFAULT_MODULE_SOURCE_MIRROR = 'https://download.nvidia.com/XFree86/NVIDIA-kernel-module-source';

const matrixScalar = { type: ['string', 'number', 'boolean'] } as const;
const matrixValue = { anyOf: [matrixScalar, { type: 'array', items: matrixScalar }] } as const;
const matrixEntries = { type: 'array', minItems: 1, items: { type: 'object', minProperties: 1, additionalProperties: matrixValue } } as const;

export const pipelineSchema = {
  type: 'object',
  additionalProperties: false,
  required: ['name', 'vendor'],
  properties: {
    name: { type: 'string', pattern: '^[a-z0-9][a-z0-9._-]*$' },
    vendor: { enum: ['nvidia', 'intel', 'nvidia-vgpu'] },
    sourceDate: { type: 'string', pattern: '^(\\d+|\\d{4}-\\d{2}-\\d{2}(T\\d{2}:\\d{2}:\\d{2}(\\.\\d+)?(Z|[+-]\\d{2}:\\d{2}))?)$', default: '2024-01-01T00:00:00Z' },
    kernel: {
      type: 'object',
      additionalProperties: false,
      required: ['version', 'localVersion'],
      properties: {
        version: { type: 'string', pattern: '^[0-9A-Za-z<>=~^ .*|-]+$' },
        source: {
          type: 'object',
          additionalProperties: false,
          default: {},
          properties: {
            mirrors: { type: 'array', items: { type: 'string', pattern: '^https?://' }, minItems: 1 },
            tarball: str,
          },
        },
        sha256,
        keyring: str,
        profile: { enum: ['kata', 'minimal'] },
        baseConfig: str,
        startFrom: { enum: ['tinyconfig', 'allnoconfig', 'defconfig', 'base'], default: 'tinyconfig' },
        fragments: strList,
        allowDropped: { type: 'array', items: { type: 'string', pattern: '^(CONFIG_)?[A-Za-z0-9_]+$' }, default: [] },
        localVersion: { type: 'string', pattern: '^-[A-Za-z0-9._+-]+$' },
        packages: { enum: ['deb', 'rpm'], default: 'deb' },
        packageVersion: { type: 'string', pattern: '^[0-9][A-Za-z0-9.+~-]*$' },
        moduleSigning: {
          type: 'object',
          additionalProperties: false,
          required: ['key', 'certificate'],
          properties: {
            key: str,
            certificate: str,
            hash: { enum: ['sha256', 'sha384', 'sha512'], default: 'sha256' },
            enforce: { type: 'boolean', default: false },
          },
        },
      },
    },
    rootfs: {
      type: 'object',
      additionalProperties: false,
      required: ['distro', 'suite'],
      properties: {
        distro: { type: 'string', pattern: '^[a-z0-9-]+$' },
        suite: { type: 'string', pattern: '^[a-z0-9.-]+$' },
        mirror: { type: 'string', pattern: '^(host|https?://\\S+|file:///\\S*)$', default: 'host' },
        components: { type: 'array', items: { type: 'string', pattern: DEBIAN_COMPONENT }, minItems: 1, default: ['main'] },
        variant: { enum: ['minbase', 'buildd', 'required', 'important', 'standard', 'essential', 'apt'], default: 'minbase' },
        packages: packageList,
        extraPackages: packageList,
        keepBuildPackages: { type: 'boolean', default: false },
      },
    },
    driver: {
      type: 'object',
      additionalProperties: false,
      // sha256 (the .run's pin) is required for run and source, checked in load.ts
      required: ['version'],
      properties: {
        version: { type: 'string', pattern: '^[0-9]+(\\.[0-9]+)+$' },
        url: { type: 'string', pattern: '^https?://' },
        path: str,
        sha256,
        source: { enum: ['run', 'source', 'apt'], default: 'run' },
        moduleSource: {
          type: 'object',
          additionalProperties: false,
          required: ['sha256'],
          properties: {
            mirrors: { type: 'array', items: { type: 'string', pattern: '^https?://' }, minItems: 1 },
            url: { type: 'string', pattern: '^https?://' },
            path: str,
            sha256,
          },
        },
        moduleType: { enum: ['open', 'proprietary'], default: 'open' },
        packages: { type: 'array', items: { type: 'string', pattern: DEBIAN_PACKAGE } },
        repository: aptRepository,
        installerArgs: strList,
        patches: strList,
      },
    },
    toolkit: {
      type: 'object',
      additionalProperties: false,
      required: ['version'],
      properties: {
        version: str,
        debs: strList,
        repository: aptRepository,
        mode: { enum: ['oci-hook', 'cdi'], default: 'oci-hook' },
      },
    },
    vgpu: {
      type: 'object',
      additionalProperties: false,
      required: ['sha256', 'osTag', 'registry'],
      properties: {
        version: { type: 'string', pattern: '^[0-9]+(\\.[0-9]+)+$' },
        path: str,
        url: { type: 'string', pattern: '^https?://' },
        sha256,
        osTag: str,
        registry: str,
        baseImage: str,
        engine: { enum: ['builtin', 'buildah', 'podman', 'docker'], default: 'builtin' },
        dockerfileDir: str,
        hostKernels: { type: 'array', items: { type: 'string', pattern: '^[0-9][A-Za-z0-9.+_-]*(=[A-Za-z0-9.+~:_-]+)?$' }, default: [] },
      },
    },
    /** Axes keyed by `--set` key paths (checked by pipeline/matrix.ts), plus GitHub's include and exclude. */
    matrix: {
      type: 'object',
      minProperties: 1,
      properties: { include: matrixEntries, exclude: matrixEntries },
      additionalProperties: { type: 'array', minItems: 1, items: matrixValue },
    },
    image: {
      type: 'object',
      additionalProperties: false,
      default: {},
      properties: {
        format: { enum: ['ext4', 'erofs', 'initrd'], default: 'ext4' },
        marginMiB: { type: 'integer', minimum: 0, default: 64 },
        sizeMiB: { type: 'integer', minimum: 1 },
        verity: { type: 'boolean', default: false },
      },
    },
  },
} as const;

type SchemaNode = { type?: string; properties?: Record<string, SchemaNode>; items?: SchemaNode; enum?: readonly unknown[] };

/** The schema node at a key path, or undefined when the path names no key. */
export function schemaAt(path: (string | number)[]): SchemaNode | undefined {
  let node: SchemaNode | undefined = pipelineSchema as unknown as SchemaNode;
  for (const part of path) {
    if (!node) return undefined;
    if (typeof part === 'number') node = node.items;
    else node = node.properties?.[part];
  }
  return node;
}

/** Keys allowed under a path, for "did you mean" hints. */
export function keysAt(path: (string | number)[]): string[] {
  return Object.keys(schemaAt(path)?.properties ?? {});
}

/**
 * How the schema is compiled (at build time into dist/pipeline/validate-pipeline.cjs, or at run
 * time from the sources). The schema is ours and fixed, and a test compiles it strictly: it is not
 * checked against JSON Schema's meta-schema at every start.
 */
export const PIPELINE_VALIDATOR_OPTIONS = { allErrors: true, useDefaults: true, strict: false, validateSchema: false } as const;
