import { Command, CommanderError, Option } from 'commander';
import { exitStatusFor, isGuestError, messageOf } from '../model/errors.js';
import { redact } from '../model/redact.js';
import { defaultCacheDir, gpuGuestVersion } from '../paths.js';
import { builtinSteps } from '../steps/index.js';
import { loadFromPipelineFile, type CliEnv } from './context.js';
import { listVendors } from '../pipeline/load.js';

const collect = (value: string, previous: string[]) => [...previous, value];

// Each command's module is loaded when that command runs: `build` does not load verify's QEMU
// driver, matrix's workflow writers or config's Kconfig reader (start-up is part of a no-op build).

function addPipelineOptions(cmd: Command, env: CliEnv): Command {
  return addPipelineSettings(
    cmd.option('--vendor <name>', `load pipelines/<name>.yaml (${listVendors().join(', ') || 'none installed'})`).option('--pipeline <file>', 'load this pipeline file instead of a vendor pipeline'),
    env,
  ).option('--out-dir <dir>', 'output folder; artifacts go to <dir>/<pipeline>/', 'out');
}

/** What changes a loaded pipeline and where its cache is: for commands that name pipelines otherwise. */
function addPipelineSettings(cmd: Command, env: CliEnv): Command {
  return cmd
    .option('--set <key.path=value>', 'override one pipeline value, repeatable (like helm --set)', collect, [])
    .option('--fragment <file>', 'add a kernel config fragment (file or folder of *.conf), repeatable', collect, [])
    .option('--cache-dir <dir>', 'cache folder', defaultCacheDir(env.env));
}

function addSelectionOptions(cmd: Command): Command {
  return cmd
    .option('--force <task>', 'rerun this task and every task that depends on it, repeatable', collect, [])
    .option('--until <task>', 'stop after this task (run it and what it depends on)')
    .option('--only <task>', 'run just this task; its inputs must be cached');
}

/** Builds the commander program. Each action resolves to an exit status. */
export function createProgram(env: CliEnv, setStatus: (n: number) => void): Command {
  const version = gpuGuestVersion();
  const program = new Command('gpu-guest')
    .description('Build GPU-enabled guest kernels, root filesystems and images for Kata Containers and KubeVirt')
    .version(version)
    .option('--debug', 'print stack traces of errors', false)
    .showHelpAfterError('(run with --help for usage)')
    .configureOutput({ writeOut: env.stdout, writeErr: env.stderr })
    .exitOverride();

  addSelectionOptions(addPipelineOptions(program.command('build').description('build the pipeline: run every task that is not cached, then lay the outputs out under the out folder'), env))
    .option('-j, --jobs <n>', 'most tasks running at once (default: no limit beyond the steps\' own resources)')
    .option('--keep-going', 'keep building branches that do not depend on a failed task', false)
    .addOption(new Option('--progress <mode>', 'how to show progress (default: tty on a terminal, plain in CI or a pipe)').choices(['tty', 'plain', 'json']))
    .option('--json', 'same as --progress json: one JSON event per line', false)
    .option('--summary <file>', 'write a JSON summary of the run to this file: tasks, keys, cached or run, durations, artifacts with sha256')
    .option('--remote-cache <url>', 'a shared cache behind the local one: plain HTTP GET/HEAD/PUT under this URL (default: GPU_GUEST_REMOTE_CACHE; token: GPU_GUEST_REMOTE_CACHE_TOKEN)')
    .option('--remote-cache-mode <mode>', 'read (only download) or readwrite (also upload what this build made)', 'readwrite')
    .option('--lock <file>', 'build exactly what this lock pins (from `gpu-guest lock`); fails with E_LOCK_MISMATCH when the pipeline no longer matches it')
    .option('--update-lock', 'with --lock: resolve every remote input again and rewrite the lock before building', false)
    .option('--bundle <file>', 'a bundle from `gpu-guest fetch --bundle`: checked whole, its files put into the cache, its lock used (with --offline: build on a machine without a network)')
    .option('--trusted-key <file>', "with --bundle: the public key the bundle must be signed with, instead of the bundle's own")
    .option('--offline', 'use no network at all: a task whose input is neither cached nor a local file fails with E_OFFLINE instead of fetching it', false)
    .option('--push', 'nvidia-vgpu: push the image after a successful build (same flags as push)', false)
    .option('--registry-auth <file>', 'with --push: a Docker config.json with the registry credentials')
    .option('--insecure-registry', 'with --push: the registry speaks plain HTTP', false)
    .addOption(new Option('--push-with <tool>', 'with --push: skopeo, or the OCI distribution API directly').choices(['auto', 'skopeo', 'api']).default('auto'))
    .action(async (opts) => setStatus(await (await import('./build.js')).buildCommand(opts, env)));

  addSelectionOptions(addPipelineOptions(program.command('plan').description('show each task, its key and dependencies, and whether it is cached or must run and why'), env))
    .option('--json', 'print the plan as JSON', false)
    .option('--dot', 'print the task graph as Graphviz dot', false)
    .option('--lock <file>', 'plan with the resolutions this lock pins (checked against the pipeline)')
    .option('--bundle <file>', 'plan with the lock this bundle carries')
    .option('--resolve', 'ask the mirrors for exact versions and sha256 of version ranges (reads only; without it plan uses no network)', false)
    .action(async (opts) => setStatus(await (await import('./plan.js')).planCommand(opts, env)));

  addPipelineOptions(program.command('lock').description('resolve every remote input of the pipeline (kernel version and tarball sha256, the rootfs package set with each .deb\'s sha256) and write them to a lock file'), env)
    .option('--lock <file>', 'the lock file to write (default: <pipeline>.lock.json in the current folder)')
    .option('--json', 'print the lock as JSON', false)
    .action(async (opts) => setStatus(await (await import('./lock.js')).lockCommand(opts, env)));

  addPipelineOptions(program.command('fetch').description('download and verify every remote input the lock pins into the cache; with --bundle also into one file to carry to a machine without a network'), env)
    .option('--lock <file>', 'the lock whose inputs to fetch (default: resolve the pipeline now, and bundle that lock)')
    .option('--bundle <file>', 'also write a bundle (tar): the lock, the downloads, a signed Debian repository of the locked packages')
    .option('--signing-key <file>', 'sign the bundle with this OpenPGP secret key (gpg --export-secret-keys, no passphrase) instead of a key made for it')
    .action(async (opts) => setStatus(await (await import('./fetch.js')).fetchCommand(opts, env)));

  program
    .command('bundle')
    .description('inspect bundles made by `gpu-guest fetch --bundle`')
    .command('verify <file>')
    .description('check every file of a bundle against its index, the repository signature, and the locked packages')
    .option('--cache-dir <dir>', 'cache folder whose scratch space the check unpacks into', defaultCacheDir(env.env))
    .option('--json', 'print the result as JSON', false)
    .option('--trusted-key <file>', "the public key the bundle must be signed with (who made it), instead of the bundle's own")
    .action(async (file: string, opts) => setStatus(await (await import('./fetch.js')).bundleVerifyCommand(file, opts, env)));

  addPipelineOptions(program.command('doctor').description('check the host tools the pipeline needs and print the apt-get line that installs the missing ones'), env)
    .option('--json', 'print the checks as JSON', false)
    .action(async (opts) => setStatus(await (await import('./doctor.js')).doctorCommand(opts, env)));

  addPipelineOptions(program.command('push').description('push the built vGPU manager image to its registry and write the GPU Operator values'), env)
    .option('--registry-auth <file>', 'a Docker config.json with credentials for the registry (default: REGISTRY_USERNAME/REGISTRY_PASSWORD, else ~/.docker/config.json)')
    .option('--insecure-registry', 'the registry speaks plain HTTP', false)
    .addOption(new Option('--push-with <tool>', 'skopeo, or the OCI distribution API directly').choices(['auto', 'skopeo', 'api']).default('auto'))
    .action(async (opts) => setStatus(await (await import('./push.js')).pushCommand(opts, env)));

  addPipelineOptions(program.command('verify').description('boot the built kernel and image in QEMU and check the guest from inside'), env)
    .addOption(new Option('--accel <accel>', 'QEMU accelerator: tcg (software) or kvm where the host\'s KVM works').choices(['tcg', 'kvm']).default('tcg'))
    .option('--timeout <seconds>', 'give up on the boot after this long', '300')
    .option('--memory <MiB>', 'guest memory', '1024')
    .option('--json', 'print the check results as JSON', false)
    .option('--kernel-arg <param>', 'an extra kernel parameter for the boot, e.g. module.sig_enforce=1, repeatable', collect, [])
    .addOption(new Option('--hotplug <slots>', 'q35 guests: prove hot-plug into a PCIe root port (large BAR, native pciehp), a PCI bridge (small BAR, ACPI hotplug; a second boot), both, or none').choices(['both', 'root-port', 'bridge', 'none']).default('both'))
    .option('--lock <file>', 'the lock the build used (build --lock): the guest built with it is the one booted')
    .option('--bundle <file>', 'the bundle the build used (build --bundle): its lock picks the guest booted')
    .action(async (opts) => setStatus(await (await import('./verify.js')).verifyCommand(opts, env)));

  addPipelineOptions(program.command('clean').description('remove the pipeline\'s out folder (all of the out folder without --vendor/--pipeline)'), env)
    .option('--cache', 'also remove every cache entry', false)
    .action(async (opts) => setStatus(await (await import('./clean.js')).cleanCommand(opts, env)));

  program
    .command('matrix')
    .description('print the CI jobs of the named pipelines (each matrix combination, or the pipeline alone): a GitHub Actions strategy.matrix, or an Argo Workflows Workflow that runs one task per pod')
    .option('--vendor <name>', 'a shipped pipeline, repeatable', collect, [])
    .option('--pipeline <file>', 'a pipeline file, repeatable', collect, [])
    .option('--set <key.path=value>', 'override one value in every job, repeatable', collect, [])
    .option('--fragment <file>', 'add a kernel config fragment to every job, repeatable', collect, [])
    .option('--cache-dir <dir>', 'cache folder whose recorded resolutions the input checks read (never written)', defaultCacheDir(env.env))
    .addOption(new Option('--format <format>', 'github: strategy.matrix JSON; argo: a Workflow (YAML) for kubectl create; json: the jobs with their tasks').choices(['github', 'argo', 'json']).default('github'))
    .option('--image <image>', 'argo: the container image with gpu-guest that every node runs')
    .option('--remote-cache <url>', 'argo: the shared cache the nodes exchange results through (default: GPU_GUEST_REMOTE_CACHE)')
    .option('--remote-cache-secret <name>', 'argo: the Kubernetes Secret whose key token holds the remote cache\'s bearer token', 'gpu-guest-remote-cache')
    .option('--generate-name <prefix>', 'argo: the Workflow\'s metadata.generateName', 'gpu-guest-')
    .action(async (opts) => setStatus(await (await import('./matrix.js')).matrixCommand(opts, env)));

  const cache = program.command('cache').description('list the cache\'s entries, or remove those unused for long or beyond a size');
  cache
    .command('list')
    .description('every cache entry with its size, kind, pipeline/task and last use, least recently used first')
    .option('--cache-dir <dir>', 'cache folder', defaultCacheDir(env.env))
    .option('--json', 'print the entries as JSON', false)
    .action(async (opts) => setStatus(await (await import('./cache.js')).cacheListCommand(opts, env)));
  cache
    .command('prune')
    .description('remove entries unused for --older-than, then the least recently used until the cache is within --max-size; never an entry a running build holds')
    .option('--older-than <age>', 'remove entries no build or verify used for this long: 14d, 12h, 30m')
    .option('--max-size <size>', 'then remove the least recently used entries until the rest take at most this much: 40G, 500M')
    .option('--dry-run', 'say what would be removed, remove nothing', false)
    .option('--cache-dir <dir>', 'cache folder', defaultCacheDir(env.env))
    .option('--json', 'print what was removed as JSON', false)
    .action(async (opts) => setStatus(await (await import('./cache.js')).cachePruneCommand(opts, env)));

  const config = program.command('config').description('compare kernel configs, and explain why an option of a built one is on or off');
  addPipelineSettings(
    config
      .command('diff <a> <b>')
      .description('print the options that differ between two configs, each a vendor name or pipeline file (its built config), a .config file, or a fragment folder or *.conf file (only the options it names are compared)'),
    env,
  )
    .option('--json', 'print the differences as JSON', false)
    .option('--exit-code', 'exit 1 when any option differs (as git diff --exit-code)', false)
    .action(async (a: string, b: string, opts) => setStatus(await (await import('./config.js')).configDiffCommand(a, b, { ...opts, outDir: 'out' }, env)));
  addPipelineOptions(config.command('explain <option>').description('why CONFIG_<option> is on or off in the pipeline\'s built config: the fragment line that asked for it, the option that selects it, or the unmet dependency'), env)
    .option('--json', 'print the explanation as JSON', false)
    .action(async (option: string, opts) => setStatus(await (await import('./config.js')).configExplainCommand(option, opts, env)));
  return program;
}

export function defaultCliEnv(): CliEnv {
  return {
    steps: builtinSteps(),
    loadGraph: loadFromPipelineFile,
    stdout: (t) => process.stdout.write(t),
    stderr: (t) => process.stderr.write(t),
    isTTY: Boolean(process.stdout.isTTY),
    env: process.env,
  };
}

/** Runs the CLI; resolves to the exit status (0 ok, 1 task failed, 2 usage or pipeline error, 130 interrupted). */
export async function main(argv: string[], overrides: Partial<CliEnv> = {}): Promise<number> {
  const given = { ...defaultCliEnv(), ...overrides };
  // whatever a command prints passes the one redaction: no URL credential reaches the terminal
  const env: CliEnv = { ...given, stdout: (t) => given.stdout(redact(t)), stderr: (t) => given.stderr(redact(t)) };
  let status = 0;
  const program = createProgram(env, (n) => (status = n));
  try {
    await program.parseAsync(argv);
    return status;
  } catch (err) {
    if (err instanceof CommanderError) {
      return err.exitCode === 0 ? 0 : 2;
    }
    const debug = argv.includes('--debug');
    if (isGuestError(err)) {
      env.stderr(`error: ${err.code}: ${err.message}\n${err.details.map((d) => `  ${d}\n`).join('')}`);
    } else {
      env.stderr(`error: ${messageOf(err)} (run with --debug for the stack trace)\n`);
    }
    if (debug && err instanceof Error) env.stderr(`${err.stack}\n`);
    return exitStatusFor(err);
  }
}
