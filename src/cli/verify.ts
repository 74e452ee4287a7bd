import { lockOfRun, withBundledPipeline } from './lock.js';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync, chmodSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { GuestError } from '../model/errors.js';
import { planRun } from '../engine/plan.js';
import { builtEntryOfKind } from '../engine/results.js';
import { checkPublishedSums, SHA256SUMS } from '../engine/publish.js';
import { packInitramfs } from '../sys/rootfs-tar.js';
import { requireHostTools } from '../sys/host-tools.js';
import { bootGuest, type HotplugSlots } from '../sys/qemu.js';
import { CDI_UNIT_PATH, HOOK_PATH } from '../steps/nvidia/toolkit.js';
import { TaskLog } from '../sys/task-log.js';
import { formatValue, parseDotConfig, parseRequested, type OptionValue } from '../sys/kconfig/options.js';
import { openCache, prepareOut, type CliEnv, type PipelineOptions } from './context.js';
import { abortOnSignals } from './signals.js';
import { guestChecks, hotplugChecks, parseChecks, verifyInit, type CheckResult, type GuestCheck } from './verify-init.js';
import { CONTAINER_CHECKS, containerChecks, containerChecksNotRun, missingContainerOptions, toolkitCheck, VIRTIOFS_NEEDS, vsockCheck } from './verify-container.js';
import { findVirtiofsd, prepareContainerShare, SHARE_TAG, startVirtiofsd, VIRTIOFS_TAG } from './verify-share.js';
import { kernelProfileFiles } from '../paths.js';

/** The BAR of the device verify hot-plugs into the root port: several GiB, as a datacenter GPU's (the port reserves 32). */
const ROOT_PORT_BAR = 16 * 2 ** 30;
/** The BAR of the device verify hot-plugs onto the bridge: a small one, as an older GPU's BAR1 (the bridge reserves 512 MiB). */
const BRIDGE_BAR = 256 * 2 ** 20;

/** Which of Kata's hotplug topologies verify proves on q35: both (two boots), one, or none. */
export type HotplugMode = 'both' | 'root-port' | 'bridge' | 'none';

export interface VerifyOptions extends PipelineOptions {
  accel: string;
  timeout: string;
  memory: string;
  json?: boolean;
  /** Extra kernel parameters, e.g. the ones Kata passes (module.sig_enforce=1, …). */
  kernelArg?: string[];
  /** q35 guests: which hotplug topologies to prove. Default both. */
  hotplug?: HotplugMode;
  /** The lock (or the bundle carrying it) the build used: the locked tasks' keys come from it. */
  lock?: string;
  bundle?: string;
}

/** One kernel parameter each: no blank, no quote (QEMU's -append takes them space-separated). */
export function checkKernelArgs(args: string[]): string[] {
  for (const a of args) {
    if (!/^[A-Za-z0-9_.-]+(=[^\s"']+)?$/.test(a)) throw new GuestError('E_USAGE', `--kernel-arg '${a}': expected one kernel parameter, name or name=value without blanks or quotes (repeat the flag for more)`);
  }
  return args;
}

/** gpu-guest verify: boots the built kernel with the built image in QEMU and checks the guest from inside. */
export async function verifyCommand(opts: VerifyOptions, env: CliEnv): Promise<number> {
  if (!['tcg', 'kvm'].includes(opts.accel)) throw new GuestError('E_USAGE', `--accel ${opts.accel}: expected tcg or kvm`);
  const timeoutS = Number(opts.timeout);
  if (!Number.isFinite(timeoutS) || timeoutS <= 0) throw new GuestError('E_USAGE', `--timeout ${opts.timeout}: expected seconds > 0`);
  const kernelArgs = checkKernelArgs(opts.kernelArg ?? []);
  const hotplug = opts.hotplug ?? 'both';
  if (!['both', 'root-port', 'bridge', 'none'].includes(hotplug)) throw new GuestError('E_USAGE', `--hotplug ${hotplug}: expected both, root-port, bridge or none`);
  const loaded = env.loadGraph(await withBundledPipeline(opts));
  if (!loaded.graph.tasks.some((t) => t.kind === 'kernel-build')) {
    throw new GuestError('E_USAGE', `verify boots a guest, and pipeline ${loaded.graph.pipeline} builds none (for the vGPU manager image use push, or skopeo inspect)`);
  }
  const { store, memo } = openCache(opts, env.env, env.stderr);
  const logs = prepareOut(loaded.pipelineOut);
  const signals = abortOnSignals(() => undefined);
  const work = mkdtempSync(join(tmpdir(), 'gpu-guest-verify-'));
  try {
    await requireHostTools('verify');
    const lock = await lockOfRun(opts, loaded, env);
    const plan = await planRun(loaded.graph, {}, { steps: env.steps, store, memo, signal: signals.signal, network: false, lock });
    const [build, config, image, driverRun, driverPackages, toolkit] = await Promise.all([
      builtEntryOfKind(plan, store, 'kernel-build'),
      builtEntryOfKind(plan, store, 'kernel-config'),
      builtEntryOfKind(plan, store, 'image'),
      builtEntryOfKind(plan, store, 'driver'),
      builtEntryOfKind(plan, store, 'driver-packages'),
      builtEntryOfKind(plan, store, 'toolkit'),
    ]);
    const driver = driverRun ?? driverPackages;
    if (!build || !image) {
      const missing = [build ? '' : 'kernel', image ? '' : 'image'].filter(Boolean);
      throw new GuestError('E_NOT_CACHED', `verify needs the built ${missing.join(' and ')} of ${plan.pipeline}: run gpu-guest build with the same pipeline and flags first${lock ? '' : ' (a build with --lock or --bundle: verify with the same flag)'}`);
    }
    const release = build.result.kernelRelease;
    const format = image.result.format;
    if (format === 'initrd') throw new GuestError('E_USAGE', 'verify boots ext4 and erofs images; this pipeline builds an initrd (set image.format: ext4 to verify it)');
    const options = config ? parseRequested(readFileSync(join(config.outDir, 'requested.conf'), 'utf8')).map((r) => formatValue(r.symbol, r.value)) : [];
    const modules = driver?.result.modules ?? [];
    const hook = toolkit && toolkit.result.mode === 'oci-hook' ? HOOK_PATH : undefined;
    const sigEnforced = options.includes('CONFIG_MODULE_SIG_FORCE=y') || kernelArgs.some((a) => /^module\.sig_enforce=(1|y|Y)$/.test(a));
    const checks = guestChecks({ release, options: [...new Set(options)], modules, loadNames: driver?.result.loadNames, signer: driver?.result.signer, hook, driverVersion: driver?.result.driverVersion, sigEnforced });
    // Kata's way into the guest: a share with the container's files, overlays, an OCI runtime
    const toolkitMode = toolkit?.result.mode as 'oci-hook' | 'cdi' | undefined;
    const built = config ? parseDotConfig(readFileSync(join(config.outDir, 'config'), 'utf8')) : undefined;
    const containers = await planContainerChecks(loaded.graph.tasks, built, toolkitMode, work, signals.signal);
    checks.push(...containers.checks);
    const machine = loaded.graph.tasks.some((t) => t.id === 'driver') ? 'q35' : 'pc';
    // the NVIDIA topologies Kata uses on q35: a PCIe root port with native hotplug for a large BAR
    // (pcie_root_port), a PCI bridge with ACPI hotplug for a small one (hotplug_vfio_on_root_bus = false)
    const mainSlots: HotplugSlots = hotplug === 'bridge' ? 'bridge' : 'root-port';
    const plugs = machine === 'q35' && hotplug !== 'none';
    if (plugs) checks.push(...hotplugChecks(mainSlots, mainSlots === 'bridge' ? BRIDGE_BAR : ROOT_PORT_BAR));
    const boot = (slots: HotplugSlots, bootChecks: GuestCheck[], log: string, container?: ContainerPlan) =>
      bootVerify({ kernel: join(build.outDir, build.result.image), disk: join(image.outDir, image.result.image), format, kernelArgs, opts, machine, slots, plugs, checks: bootChecks, work: join(work, slots), log, signal: signals.signal, container });
    const consoleLog = join(logs, 'verify.log');
    env.stdout(`booting ${release} with ${image.result.image} in qemu (${opts.accel}, at most ${timeoutS} s)${kernelArgs.length ? ` with ${kernelArgs.join(' ')}` : ''}\n`);
    // the main boot carries the container checks; the bridge's second boot proves its hotplug alone
    const main = await boot(mainSlots, checks, consoleLog, containers);
    const results = [await publishedSumsResult(loaded.pipelineOut), ...parseChecks(main.console, checks.map((c) => c.name)), ...containers.results];
    let second: { console: string; timedOut: boolean } | undefined;
    if (machine === 'q35' && hotplug === 'both') {
      // ACPI hotplug on q35 would also take the root ports from pciehp: the bridge needs a boot of its own
      const bridgeChecks = hotplugChecks('bridge', BRIDGE_BAR);
      const bridgeLog = join(logs, 'verify-bridge.log');
      env.stdout(`booting it again with a PCI bridge and ACPI hotplug (Kata's topology for small-BAR GPUs)\n`);
      second = await boot('bridge', bridgeChecks, bridgeLog);
      results.push(...parseChecks(second.console, bridgeChecks.map((c) => c.name)).filter((r) => r.name !== 'image-mounts' || !r.pass));
    }
    const notPlugged = (why: string) => ['pcie-hotplug', 'bridge-hotplug'].filter((n) => !results.some((r) => r.name === n)).map((name) => ({ name, pass: true, skipped: true, detail: why }));
    if (machine === 'pc') results.push(...notPlugged("machine pc (Kata's topology for this guest) has no PCIe root port or hotplug bridge: devices go onto the root bus"));
    else if (hotplug !== 'both') results.push(...notPlugged(`not asked for (--hotplug ${hotplug})`));
    const boots = [main, ...(second ? [second] : [])];
    const timedOut = boots.find((b) => b.timedOut && !/GG-DONE/.test(b.console));
    if (opts.json) env.stdout(`${JSON.stringify({ release, results, timedOut: Boolean(timedOut), console: consoleLog })}\n`);
    else for (const r of results) env.stdout(`${r.skipped ? 'skip' : r.pass ? 'pass' : 'FAIL'}  ${r.name}${r.detail ? `  ${r.detail}` : ''}\n`);
    const failed = results.filter((r) => !r.pass);
    if (timedOut) {
      throw new GuestError('E_BOOT_TIMEOUT', `the guest did not finish its checks within ${timeoutS} s (serial console: ${timedOut === main ? consoleLog : join(logs, 'verify-bridge.log')}; raise --timeout, or check the kernel boots)`, { details: timedOut.console.trimEnd().split('\n').slice(-15) });
    }
    if (failed.length) throw new GuestError('E_VERIFY_FAILED', `${failed.length} of ${results.length} checks failed in the guest (serial console: ${consoleLog})`, { details: failed.map((f) => `${f.name}: ${f.detail}`) });
    const skipped = results.filter((r) => r.skipped).length;
    env.stdout(`all ${results.length - skipped} checks passed${skipped ? `, ${skipped} skipped` : ''}\n`);
    return 0;
  } finally {
    signals.dispose();
    rmSync(work, { recursive: true, force: true });
  }
}

/** One boot of the verify initramfs with the built kernel and image, in one hotplug topology. */
async function bootVerify(o: { kernel: string; disk: string; format: string; kernelArgs: string[]; opts: VerifyOptions; machine: 'q35' | 'pc'; slots: HotplugSlots; plugs: boolean; checks: GuestCheck[]; work: string; log: string; signal: AbortSignal; container?: ContainerPlan }) {
  mkdirSync(o.work, { recursive: true });
  const bar = o.slots === 'bridge' ? BRIDGE_BAR : ROOT_PORT_BAR;
  const c = o.container;
  const initrd = await buildVerifyInitrd(o.work, verifyInit(o.checks, o.format), o.signal);
  const socket = join(o.work, 'virtiofs.sock');
  const virtiofsd = c?.virtiofsd && c.share ? await startVirtiofsd(c.virtiofsd, c.share, socket, o.log.replace(/\.log$/, '-virtiofsd.log')) : undefined;
  try {
    return await bootGuestWith(o, initrd, bar, c, virtiofsd ? socket : undefined);
  } finally {
    virtiofsd?.stop();
  }
}

/** QEMU's part of one verify boot: the topology, the hotplug monitor, the shares, the vsock. */
function bootGuestWith(o: Parameters<typeof bootVerify>[0], initrd: string, bar: number, c: ContainerPlan | undefined, virtiofsSocket: string | undefined) {
  return bootGuest({
    kernel: o.kernel,
    initrd,
    disk: o.disk,
    append: ['console=ttyS0 panic=-1 loglevel=4', ...o.kernelArgs].join(' '),
    accel: o.opts.accel as 'tcg' | 'kvm',
    machine: o.machine,
    slots: o.slots,
    hotplug: o.machine === 'q35' && o.plugs ? { qmpSocket: join(o.work, 'qmp.sock'), memPath: join(o.work, 'bar.mem'), barBytes: bar } : undefined,
    share: c?.share ? { dir: c.share, tag: SHARE_TAG } : undefined,
    virtiofs: virtiofsSocket ? { socket: virtiofsSocket, tag: VIRTIOFS_TAG } : undefined,
    vsockCid: c?.vsockCid,
    memoryMiB: Number(o.opts.memory),
    timeoutMs: Number(o.opts.timeout) * 1000,
    logFile: o.log,
    signal: o.signal,
    doneMarker: /^GG-DONE/m,
  });
}

/**
 * The vsock check where the host can give the guest one, and the container checks when the guest
 * kernel can run containers (a share, the runtime and its bundles prepared on the host); what
 * cannot run is reported with its reason.
 */
async function planContainerChecks(tasks: { kind: string; files: Record<string, unknown> }[], config: Map<string, OptionValue> | undefined, toolkitMode: 'oci-hook' | 'cdi' | undefined, work: string, signal: AbortSignal): Promise<ContainerPlan> {
  const minimal = tasks.find((t) => t.kind === 'kernel-config')?.files.baseConfig === kernelProfileFiles('minimal').baseConfig;
  const plan: ContainerPlan = { checks: [], results: [] };
  const vsock = vsockCheck(config ?? new Map(), existsSync('/dev/vhost-vsock'));
  if ('check' in vsock) {
    plan.checks.push(vsock.check);
    plan.vsockCid = vsock.cid;
  } else plan.results.push({ name: 'vsock', pass: true, skipped: true, detail: vsock.why });
  const missing = config ? missingContainerOptions(config) : ['the built kernel config'];
  if (!config || missing.length) {
    plan.results.push(...containerChecksNotRun([...CONTAINER_CHECKS, ...toolkitCheck(toolkitMode)], missing, minimal));
    return plan;
  }
  const noVirtiofs = missingContainerOptions(config, VIRTIOFS_NEEDS);
  const virtiofsd = findVirtiofsd();
  if (noVirtiofs.length) plan.results.push(...containerChecksNotRun(['share-virtiofs'], noVirtiofs, minimal));
  else if (!virtiofsd) plan.results.push({ name: 'share-virtiofs', pass: true, skipped: true, detail: "no virtiofsd on this host (QEMU's /usr/lib/qemu/virtiofsd, in Debian's qemu-system-common): the container's files come over 9p" });
  const hook = toolkitMode === 'oci-hook' ? { path: HOOK_PATH } : undefined;
  const share = await prepareContainerShare(work, { hook }, signal);
  const virtiofs = !noVirtiofs.length && virtiofsd ? virtiofsd : undefined;
  plan.checks.push(...containerChecks({ marker: share.marker, hook, cdiUnit: toolkitMode === 'cdi' ? CDI_UNIT_PATH : undefined, virtiofs: Boolean(virtiofs) }));
  return { ...plan, share: share.dir, virtiofsd: virtiofs };
}

/** What the main boot adds for Kata's container path: checks, results known without a boot, the share. */
interface ContainerPlan {
  checks: GuestCheck[];
  results: CheckResult[];
  share?: string;
  /** Serves the share over virtio-fs too. */
  virtiofsd?: string;
  vsockCid?: number;
}

/** On the host: out/<pipeline>/ holds what the build published, file by file (SHA256SUMS). */
async function publishedSumsResult(pipelineOut: string): Promise<CheckResult> {
  const sums = await checkPublishedSums(pipelineOut);
  if (!sums) return { name: 'out-sha256sums', pass: true, skipped: true, detail: `no ${SHA256SUMS} in ${pipelineOut}: nothing was published there (gpu-guest build writes it)` };
  if (sums.wrong.length) return { name: 'out-sha256sums', pass: false, detail: `${sums.wrong.length} of ${sums.files} files in ${pipelineOut} do not match ${SHA256SUMS}: ${sums.wrong.slice(0, 3).join('; ')} (build again to publish them anew)` };
  return { name: 'out-sha256sums', pass: true, detail: `${sums.files} files in ${pipelineOut} match ${SHA256SUMS}` };
}

/** A gzip'd cpio with the host's static busybox and the check script as /init. */
export async function buildVerifyInitrd(work: string, init: string, signal: AbortSignal): Promise<string> {
  const root = join(work, 'initramfs');
  mkdirSync(join(root, 'bin'), { recursive: true });
  const busybox = ['/bin/busybox', '/usr/bin/busybox'].find((p) => existsSync(p));
  if (!busybox) throw new GuestError('E_MISSING_TOOL', 'verify needs a static busybox (apt-get install busybox-static)');
  copyFileSync(busybox, join(root, 'bin/busybox'));
  chmodSync(join(root, 'bin/busybox'), 0o755);
  writeFileSync(join(root, 'init'), init);
  chmodSync(join(root, 'init'), 0o755);
  const out = join(work, 'verify.cpio.gz');
  const log = new TaskLog(join(work, 'initrd.log'));
  try {
    await packInitramfs(log, root, out, signal);
  } finally {
    log.close();
  }
  return out;
}
