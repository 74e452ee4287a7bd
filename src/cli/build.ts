import { appendFileSync, existsSync, renameSync, writeFileSync } from 'node:fs';
import { basename, join, resolve } from 'node:path';
import { GuestError } from '../model/errors.js';
import { EventBus } from '../engine/events.js';
import { planRun, type Selection } from '../engine/plan.js';
import { publishOutputs, type Provenance } from '../engine/publish.js';
import type { LockFile } from '../engine/lock.js';
import { canonicalJson, sha256Hex, type Json } from '../model/json.js';
import { sha256File } from '../sys/hash.js';
import { gpuGuestVersion } from '../paths.js';
import { createEventsFileReporter } from '../engine/report/events-file.js';
import { createJsonReporter } from '../engine/report/json.js';
import { createPlainReporter } from '../engine/report/plain.js';
import { chooseProgressMode, type Reporter } from '../engine/report/reporter.js';
import { createTraceReporter } from '../engine/report/trace.js';
import { createGithubReporter } from '../engine/report/github.js';
import { runSummary, summaryMarkdown, type RunSummary } from '../engine/report/run-summary.js';
import { RemoteCacheStore, type RemoteCacheOptions } from '../engine/remote-cache.js';
import { redact } from '../model/redact.js';
import { runPlan } from '../engine/run.js';
import { readResult } from '../engine/results.js';
import { exitStatusFor } from '../model/errors.js';
import { assertOutUsable, checkOutputFile, openCache, prepareOut, type CliEnv, type PipelineOptions } from './context.js';
import { abortOnSignals } from './signals.js';
import { pushEntry, type PushOptions } from './push.js';
import { TaskLog } from '../sys/task-log.js';
import { lockForBuild, withBundledPipeline } from './lock.js';
import { bundleForBuild } from './fetch.js';
import { checkKernelSwitches } from '../sys/kbuild.js';

export interface BuildOptions extends PipelineOptions, Selection, PushOptions {
  /** After a successful build, push the vGPU manager image (nvidia-vgpu). */
  push?: boolean;
  jobs?: string;
  keepGoing?: boolean;
  progress?: string;
  json?: boolean;
  /** Write a JSON summary of the run (tasks, keys, cached or run, durations, artifacts) here. */
  summary?: string;
  remoteCache?: string;
  remoteCacheMode?: string;
  /** Build with no network at all: what is not cached or local is E_OFFLINE, never fetched. */
  offline?: boolean;
  /** Build exactly what this lock pins; E_LOCK_MISMATCH when the pipeline no longer matches it. */
  lock?: string;
  /** With --lock: resolve again and rewrite the lock first. */
  updateLock?: boolean;
  /** A bundle from `gpu-guest fetch --bundle`: verified, its files put into the cache, its lock used. */
  bundle?: string;
  /** With bundle: the public key it must be signed with. */
  trustedKey?: string;
}

/** gpu-guest build: plan, run what is not cached, lay the outputs out. Returns the exit status. */
export async function buildCommand(opts: BuildOptions, env: CliEnv): Promise<number> {
  const jobs = parseJobs(opts.jobs);
  checkKernelSwitches(env.env);
  if (opts.summary !== undefined) checkOutputFile('--summary', opts.summary);
  const loaded = env.loadGraph(await withBundledPipeline(opts));
  assertOutUsable(loaded.pipelineOut);
  const remote = remoteCacheOptions(opts, env);
  const offline = opts.offline ?? false;
  if (offline) refuseNetworkOptions(opts, remote);
  if (opts.trustedKey && !opts.bundle) throw new GuestError('E_USAGE', '--trusted-key checks a bundle: give --bundle FILE too');
  if (opts.bundle && (opts.lock || opts.updateLock)) throw new GuestError('E_USAGE', `--bundle ${opts.bundle} carries its own lock: drop ${opts.lock ? '--lock' : '--update-lock'}`);
  const { store: local, memo } = openCache(opts, env.env, env.stderr);
  const store = remote ? new RemoteCacheStore(local, remote) : local;
  const signals = abortOnSignals(() => env.stderr('still cleaning up after the interrupt (mounts, scratch folders); please wait\n'));
  try {
    const lock = opts.bundle ? await bundleForBuild(opts.bundle, loaded, env, local, signals.signal, opts.trustedKey) : await lockForBuild(opts, loaded, env, signals.signal);
    // the plan checks every input it can (preflight) before the out folder is even created
    const plan = await planRun(loaded.graph, opts, { steps: env.steps, store, memo, signal: signals.signal, network: !offline, offline, lock });
    memo.save();
    const logsDir = prepareOut(loaded.pipelineOut);
    const bus = new EventBus();
    const reporters = await createReporters(opts, env, logsDir);
    for (const r of reporters) bus.subscribe(r.listen);
    const started = Date.now();
    const outcome = await runPlan(plan, loaded.graph, env.steps, store, bus, {
      jobs: jobs ?? Math.max(1, loaded.graph.tasks.length),
      keepGoing: opts.keepGoing ?? false,
      logsDir,
      signal: signals.signal,
      sourceDate: loaded.sourceDate,
      network: !offline,
    });
    for (const r of reporters) await r.close?.();
    if (store instanceof RemoteCacheStore && outcome.status !== 'interrupted') {
      const uploaded = await store.flush();
      if (uploaded) env.stderr(`uploaded ${uploaded} cache entr${uploaded === 1 ? 'y' : 'ies'} to the remote cache\n`);
    }
    // out/ shows the last successful build: a failed or interrupted one leaves its logs, never a partial set of artifacts
    const artifacts = outcome.status === 'succeeded' ? publishOutputs(plan, outcome, env.steps, loaded.pipelineOut, gpuGuestVersion(), await provenanceOf(loaded, opts, lock)) : [];
    writeSummaries(opts, env, runSummary({ pipeline: plan.pipeline, gpuGuest: gpuGuestVersion(), status: outcome.status, durationMs: Date.now() - started, planned: plan.tasks, results: outcome.results, artifacts, failure: outcome.failure, criticalPath: outcome.criticalPath, peakRssBytes: process.resourceUsage().maxRSS * 1024 }));
    if (outcome.status === 'interrupted') {
      env.stderr('interrupted: running tasks were stopped and left no cache entry; run the same command again to continue\n');
      return 130;
    }
    if (outcome.failure) {
      const f = outcome.failure;
      const lines = [`error: ${f.error.code}: ${f.error.message}`, ...f.error.details.map((d) => `  ${d}`)];
      // a task that failed before it started (its cache lock) has no log to show
      if (f.tail.length) lines.push(`--- last ${f.tail.length} lines of ${f.id}'s log ---`, ...f.tail, `--- full log: ${f.logFile}`);
      env.stderr(`${lines.join('\n')}\n`);
    }
    // a step that rejects its input (E_PIPELINE_INVALID …) exits 2, as the same error at plan time does
    if (outcome.status !== 'succeeded') return outcome.failure ? exitStatusFor(outcome.failure.error) : 1;
    if (opts.push) {
      const task = plan.tasks.find((t) => t.kind === 'vgpu-image');
      const entry = task && outcome.entries.get(task.id);
      if (!entry) throw new GuestError('E_USAGE', `--push: pipeline ${plan.pipeline} builds no vGPU manager image (use --vendor nvidia-vgpu)`);
      const log = new TaskLog(join(logsDir, 'push.log'));
      try {
        return await pushEntry(readResult(entry, 'vgpu-image'), loaded.pipelineOut, opts, env, log, signals.signal);
      } finally {
        log.close();
      }
    }
    return 0;
  } finally {
    signals.dispose();
  }
}

/** The pipeline file's and the lock's digests for the manifest (the lock as read, or as the bundle carried it). */
async function provenanceOf(loaded: { pipelineFile?: string }, opts: BuildOptions, lock: LockFile | undefined): Promise<Provenance> {
  const out: Provenance = {};
  if (loaded.pipelineFile && existsSync(loaded.pipelineFile)) {
    // a pipeline the bundle carried is named inside the bundle, not by the folder it was unpacked to for the run
    const fromBundle = opts.bundle && !opts.pipeline && !opts.vendor ? `${resolve(opts.bundle)}:pipeline/${basename(loaded.pipelineFile)}` : undefined;
    out.pipelineFile = { path: fromBundle ?? loaded.pipelineFile, sha256: await sha256File(loaded.pipelineFile) };
  }
  if (lock) out.lock = { sha256: sha256Hex(canonicalJson(lock as unknown as Json)), ...(opts.bundle ? { bundle: resolve(opts.bundle) } : { path: resolve(opts.lock!) }) };
  return out;
}

async function createReporters(opts: BuildOptions, env: CliEnv, logsDir: string): Promise<Reporter[]> {
  const mode = chooseProgressMode(opts, env.isTTY, env.env);
  const line = (l: string) => env.stdout(`${l}\n`);
  // listr2 is loaded only for a terminal: a CI or scripted build does not pay for it
  const view: Reporter =
    mode === 'tty' ? (await import('../engine/report/tty.js')).createTtyReporter(env.stdout) : { listen: mode === 'json' ? createJsonReporter(line) : createPlainReporter(line) };
  // on a GitHub Actions runner (and not printing JSON events): log groups and error annotations too
  const github: Reporter[] = onGithubActions(env.env) && mode === 'plain' ? [{ listen: createGithubReporter(line) }] : [];
  return [view, ...github, { listen: createTraceReporter(join(logsDir, 'trace.json')) }, { listen: createEventsFileReporter(join(logsDir, 'events.jsonl')) }];
}

/** --remote-cache (or GPU_GUEST_REMOTE_CACHE) and its mode, checked before anything runs. */
function remoteCacheOptions(opts: BuildOptions, env: CliEnv): RemoteCacheOptions | undefined {
  const url = opts.remoteCache ?? (env.env.GPU_GUEST_REMOTE_CACHE || undefined);
  if (!url) return undefined;
  if (!/^https?:\/\/[^/]+/.test(url)) throw new GuestError('E_USAGE', `--remote-cache ${redact(url)}: expected an http:// or https:// URL`);
  const mode = opts.remoteCacheMode ?? 'readwrite';
  if (mode !== 'read' && mode !== 'readwrite') throw new GuestError('E_USAGE', `--remote-cache-mode ${mode}: expected read or readwrite`);
  const token = env.env.GPU_GUEST_REMOTE_CACHE_TOKEN || undefined;
  const timeout = env.env.GPU_GUEST_REMOTE_CACHE_TIMEOUT;
  const seconds = timeout === undefined || timeout === '' ? 30 : Number(timeout);
  if (!Number.isFinite(seconds) || seconds <= 0) throw new GuestError('E_USAGE', `GPU_GUEST_REMOTE_CACHE_TIMEOUT=${timeout}: expected a number of seconds above 0`);
  return { url, mode, token, warn: (line) => env.stderr(`${line}\n`), connectTimeoutMs: Math.min(10, seconds) * 1000, idleTimeoutMs: seconds * 1000 };
}

/** --offline with an option whose whole point is the network is a contradiction, said at once. */
function refuseNetworkOptions(opts: BuildOptions, remote: RemoteCacheOptions | undefined): void {
  if (opts.push) throw new GuestError('E_USAGE', '--offline and --push: a push needs the registry; build with --offline, then run `gpu-guest push` where the registry is reachable');
  if (remote) throw new GuestError('E_USAGE', `--offline and a remote cache (${opts.remoteCache ? '--remote-cache' : 'GPU_GUEST_REMOTE_CACHE'} ${redact(remote.url)}): a remote cache is the network; drop one`);
}

function onGithubActions(env: NodeJS.ProcessEnv): boolean {
  return env.GITHUB_ACTIONS === 'true';
}

/** The run summary to --summary FILE (JSON, written whole) and, on GitHub Actions, to GITHUB_STEP_SUMMARY (Markdown, appended). */
function writeSummaries(opts: BuildOptions, env: CliEnv, summary: RunSummary): void {
  if (opts.summary) {
    const tmp = `${opts.summary}.${process.pid}.tmp`;
    writeFileSync(tmp, `${JSON.stringify(summary, null, 2)}\n`);
    renameSync(tmp, opts.summary);
  }
  const step = env.env.GITHUB_STEP_SUMMARY;
  if (onGithubActions(env.env) && step) {
    try {
      appendFileSync(step, summaryMarkdown(summary));
    } catch (err) {
      env.stderr(`warning: could not append the run summary to GITHUB_STEP_SUMMARY (${step}): ${(err as Error).message}\n`);
    }
  }
}

export function parseJobs(value: string | undefined): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1) throw new GuestError('E_USAGE', `--jobs ${value}: expected a whole number of 1 or more`);
  return n;
}
