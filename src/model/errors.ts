/**
 * Every error gpu-guest raises on purpose is a GuestError: a stable `code` from the table below, a
 * message that says what happened, to which input, and what to do, and the `cause` it wraps.
 */
export type ErrorKind = 'usage' | 'build' | 'interrupted';

/** What a code means for the exit status, and the one-line fix the README's table shows. */
export interface ErrorCodeInfo {
  /** usage: the command line, pipeline file or an input named in it is wrong (exit 2); build: a task or command failed (exit 1). */
  kind: ErrorKind;
  /** What usually fixes it, in one line. */
  fix: string;
}

/**
 * The one table of error codes. The README's troubleshooting table is checked against it by a
 * test, and every code is asserted by at least one test.
 */
export const ERROR_CODES = {
  E_USAGE: { kind: 'usage', fix: 'fix the flag the message names (`gpu-guest <command> --help` lists them)' },
  E_UNKNOWN_VENDOR: { kind: 'usage', fix: 'pick a vendor that `pipelines/` holds, or pass `--pipeline FILE`' },
  E_PIPELINE_NOT_FOUND: { kind: 'usage', fix: 'check the `--pipeline` path' },
  E_PIPELINE_SYNTAX: { kind: 'usage', fix: 'fix the YAML at the file:line:column shown' },
  E_PIPELINE_INVALID: { kind: 'usage', fix: 'fix the key the message names (README: pipeline file format)' },
  E_SET_PATH: { kind: 'usage', fix: 'name an existing key in `--set key.path=value`' },
  E_UNKNOWN_TASK: { kind: 'usage', fix: 'use one of the task ids the message lists' },
  E_UNKNOWN_STEP: { kind: 'usage', fix: 'the pipeline uses a step kind this gpu-guest lacks: update gpu-guest or the pipeline' },
  E_CYCLE: { kind: 'usage', fix: 'remove one of the dependencies on the cycle shown' },
  E_NOT_CACHED: { kind: 'usage', fix: 'build the inputs first (`build --until <input>`, or a full `build`)' },
  E_CLEAN_REFUSED: { kind: 'usage', fix: 'clean removes only folders gpu-guest made: check --out-dir / --cache-dir, or remove the folder yourself' },
  E_CACHE_UNWRITABLE: { kind: 'usage', fix: 'pass `--cache-dir` to a writable folder or fix its permissions' },
  E_OUT_UNWRITABLE: { kind: 'usage', fix: 'pass `--out-dir` to a writable folder or fix its permissions' },
  E_VGPU_NAME: { kind: 'usage', fix: 'name the vGPU .run as NVIDIA does (`NVIDIA-Linux-x86_64-<version>-vgpu-kvm.run`) and use a known OS tag' },
  E_FRAGMENT_NOT_FOUND: { kind: 'usage', fix: 'fix the path in `kernel.fragments` or `--fragment`' },
  E_FRAGMENT_SYNTAX: { kind: 'usage', fix: 'fix the fragment line shown (`CONFIG_X=y|m|n|"text"|number` or `# CONFIG_X is not set`)' },
  E_FRAGMENT_CONFLICT: { kind: 'usage', fix: 'make `CONFIG_LOCALVERSION` in the fragments equal `kernel.localVersion`' },
  E_INPUT_NOT_FOUND: { kind: 'usage', fix: 'restore the file, or fix the pipeline path that names it' },
  E_NEEDS_NETWORK: { kind: 'usage', fix: 'pin the input (`kernel.version` exact and `kernel.sha256`), or run `build` once to record the resolution' },
  E_LOCK_INVALID: { kind: 'usage', fix: 'write the lock again with `gpu-guest lock` (do not edit it by hand)' },
  E_LOCK_MISMATCH: { kind: 'usage', fix: 'refresh the lock (`gpu-guest lock`, or `build --update-lock`), or revert the pipeline change the message names' },
  E_BUNDLE_CORRUPT: { kind: 'usage', fix: 'fetch the bundle again on the connected machine (`gpu-guest fetch --bundle`) and carry it over once more' },
  E_OFFLINE: { kind: 'usage', fix: 'build once with the network into the same cache, or give the input as a local file (`kernel.source.tarball`, `driver.path`, `toolkit.debs`, a `file://` `rootfs.mirror`)' },
  E_MISSING_TOOL: { kind: 'build', fix: 'install what the message names (`gpu-guest doctor` prints the apt-get line)' },
  E_INTERRUPTED: { kind: 'interrupted', fix: 'run the same command again: finished tasks are reused' },
  E_DISK_FULL: { kind: 'build', fix: 'free disk space: `gpu-guest cache prune --older-than 14d` or `--max-size SIZE` removes old cache entries' },
  E_STEP_FAILED: { kind: 'build', fix: 'an unexpected failure inside a step: see the task log; rerun with `--debug` and report it' },
  E_UPSTREAM_FAILED: { kind: 'build', fix: 'fix the task it depends on, which failed first' },
  E_COMMAND_FAILED: { kind: 'build', fix: 'read the lines shown and the task log named under them' },
  E_CACHE_LOCK: { kind: 'build', fix: 'the cache lock could not be taken: check the cache folder\'s space and permissions' },
  E_MOUNTINFO: { kind: 'build', fix: 'gpu-guest must read /proc/self/mountinfo before deleting a folder: mount /proc' },
  E_MOUNT_LEAK: { kind: 'build', fix: '`umount -R <path>` as the message says; mounts left by a killed run are removed by the next build' },
  E_DOWNLOAD: { kind: 'build', fix: 'check the mirror or URL and the network; on an air-gapped host use a local tarball' },
  E_NOT_FOUND: { kind: 'build', fix: 'check the version or package name against what the mirror offers' },
  E_CHECKSUM_MISMATCH: { kind: 'build', fix: 'check the mirror, or the pinned sha256' },
  E_SIGNATURE: { kind: 'build', fix: 'check `kernel.keyring` holds the key that signed sha256sums.asc' },
  E_NOT_KERNEL_TREE: { kind: 'build', fix: 'point `kernel.source.tarball` at a Linux source tarball' },
  E_ARCHIVE_UNSAFE: { kind: 'build', fix: 'the archive holds links that point outside it: use a genuine source tarball' },
  E_VERSION_MISMATCH: { kind: 'build', fix: 'make the pipeline\'s version match the file: `kernel.version` the tarball\'s Makefile, `driver.version` the .run\'s .manifest' },
  E_OPTION_DROPPED: { kind: 'build', fix: 'satisfy the unmet `depends on` shown, or list the symbol in `kernel.allowDropped`' },
  E_DRIVER_KERNEL: { kind: 'build', fix: 'drop the fragment line that turns the option off, or enable what it depends on: the driver cannot be built or loaded without it' },
  E_UNKNOWN_SYMBOL: { kind: 'build', fix: 'fix the misspelled symbol, or drop it: this kernel does not define it' },
  E_KERNEL_RELEASE: { kind: 'build', fix: 'make CONFIG_LOCALVERSION take effect (it must equal `kernel.localVersion`)' },
  E_PACKAGE_MISSING: { kind: 'build', fix: 'see the task log of kernel-debs: the packaging produced no kernel package' },
  E_HEADERS_MISSING: { kind: 'build', fix: 'the driver needs `CONFIG_MODULES=y` and the linux-headers package' },
  E_NOT_MAKESELF: { kind: 'build', fix: 'point `driver.path` at NVIDIA\'s .run file (a makeself archive)' },
  E_ARCHIVE_CORRUPT: { kind: 'build', fix: 'download the .run again: its embedded checksums do not match' },
  E_DRIVER_PATCH: { kind: 'usage', fix: 'fix or drop the patch named: it does not apply to this driver\'s source' },
  E_MODULE_SIGNING: { kind: 'build', fix: "build the kernel with the same `kernel.moduleSigning` (its sign-file signs NVIDIA's modules); the signer shown must be the certificate issuer's CN" },
  E_DRIVER_SOURCE: { kind: 'build', fix: 'point `driver.moduleSource` at NVIDIA\'s kernel module source release (or a module tree) of `driver.version`, matching `driver.moduleType`' },
  E_DRIVER_INSTALL: { kind: 'build', fix: "read the log lines shown (nvidia-installer's log, or DKMS's make.log with `driver.source: apt`); the full log is in the task log" },
  E_TOOLKIT_INCOMPLETE: { kind: 'build', fix: 'give all four toolkit packages in `toolkit.debs`' },
  E_TOOLKIT_VERSION: { kind: 'build', fix: 'give toolkit packages of one version, equal to `toolkit.version`' },
  E_TOOLKIT_INSTALL: { kind: 'build', fix: 'check the toolkit packages: their postinst did not create the hook binary' },
  E_IMAGE_PATH: { kind: 'build', fix: 'remove the file the message names from the rootfs (the recipe\'s cleanup.list)' },
  E_SBOM: { kind: 'build', fix: 'build the guest from a dpkg-based rootfs (the SBOM reads /var/lib/dpkg/status)' },
  E_IMAGE_TOO_SMALL: { kind: 'build', fix: 'raise `image.sizeMiB` or `image.marginMiB`, or remove `image.sizeMiB`' },
  E_BASE_IMAGE: { kind: 'build', fix: 'point `vgpu.baseImage` at an OCI image layout or oci-archive' },
  E_PUSH_AUTH: { kind: 'build', fix: 'check the registry credentials (`--registry-auth`, REGISTRY_USERNAME/REGISTRY_PASSWORD)' },
  E_PUSH_UNREACHABLE: { kind: 'build', fix: 'check `vgpu.registry` and the network; `--insecure-registry` for plain HTTP' },
  E_PUSH_FAILED: { kind: 'build', fix: 'run the push again: uploaded layers are skipped' },
  E_BOOT_TIMEOUT: { kind: 'build', fix: 'look at `out/<pipeline>/logs/verify.log`; raise `--timeout` on a slow host' },
  E_VERIFY_FAILED: { kind: 'build', fix: 'each failed check is listed with its detail; the serial console is in `logs/verify.log`' },
} as const satisfies Record<string, ErrorCodeInfo>;

export type ErrorCode = keyof typeof ERROR_CODES;

export class GuestError extends Error {
  override name = 'GuestError';
  readonly code: ErrorCode;
  /** Lines shown under the message (offenders, one per line). */
  readonly details: string[];

  constructor(code: ErrorCode, message: string, options: { cause?: unknown; details?: string[] } = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
    this.details = options.details ?? [];
  }

  get kind(): ErrorKind {
    return ERROR_CODES[this.code].kind;
  }
}

export function isGuestError(err: unknown): err is GuestError {
  return err instanceof GuestError;
}

/** Exit statuses, documented in the README. */
export const EXIT = { ok: 0, taskFailed: 1, usage: 2, interrupted: 130 } as const;

export function exitStatusFor(err: unknown): number {
  if (!isGuestError(err)) return EXIT.taskFailed;
  switch (err.kind) {
    case 'usage':
      return EXIT.usage;
    case 'interrupted':
      return EXIT.interrupted;
    default:
      return EXIT.taskFailed;
  }
}

/** The message of any thrown value, without a stack. */
export function messageOf(err: unknown): string {
  if (err instanceof Error) return err.message;
  return String(err);
}
