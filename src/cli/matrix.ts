import { stringify as toYaml } from 'yaml';
import { GuestError, isGuestError } from '../model/errors.js';
import { redact } from '../model/redact.js';
import type { Json } from '../model/json.js';
import { gpuGuestVersion } from '../paths.js';
import { describe, setText } from '../pipeline/matrix.js';
import { argoWorkflow } from '../ci/argo.js';
import { jobSlug, shellLine, type MatrixJob } from '../ci/jobs.js';
import type { TaskGraph } from '../model/task.js';
import { planRun } from '../engine/plan.js';
import { openCacheReadOnly, type CliEnv } from './context.js';
import { abortOnSignals } from './signals.js';

export interface MatrixOptions {
  vendor: string[];
  pipeline: string[];
  set: string[];
  fragment: string[];
  /** Where `plan` would look for recorded resolutions (read only). */
  cacheDir?: string;
  format: 'github' | 'argo' | 'json';
  image?: string;
  remoteCache?: string;
  remoteCacheSecret: string;
  generateName: string;
}

/** GitHub Actions runs at most this many jobs of one matrix. */
export const GITHUB_MATRIX_LIMIT = 256;

/** gpu-guest matrix: every pipeline's combinations as CI jobs, for GitHub Actions or Argo Workflows. */
export async function matrixCommand(opts: MatrixOptions, env: CliEnv): Promise<number> {
  const jobs = await matrixJobs(opts, env);
  if (opts.format === 'github') {
    if (jobs.length > GITHUB_MATRIX_LIMIT) {
      throw new GuestError('E_USAGE', `matrix --format github: ${jobs.length} jobs, but GitHub Actions runs at most ${GITHUB_MATRIX_LIMIT} per matrix (exclude combinations, or split the pipelines over several workflow jobs)`);
    }
    const include = jobs.map((j) => ({ id: j.id, name: j.name, pipeline: j.pipeline, args: shellLine(j.args) }));
    env.stdout(`${JSON.stringify({ include })}\n`);
  } else if (opts.format === 'argo') {
    env.stdout(toYaml(argoWorkflow(jobs, argoOptions(opts, jobs, env)), { lineWidth: 0 }));
  } else {
    const list = jobs.map((j) => ({ id: j.id, name: j.name, pipeline: j.pipeline, args: j.args, tasks: j.graph.tasks.map((t) => t.id) }));
    env.stdout(`${JSON.stringify({ jobs: list } as unknown as Json, null, 2)}\n`);
  }
  return 0;
}

/**
 * The jobs of every pipeline named, in the order named: its matrix's combinations, or itself alone.
 * Each is loaded and its inputs checked as `plan` checks them (no network, nothing written), so a
 * combination that could not build fails here, not on a runner an hour later.
 */
export async function matrixJobs(opts: MatrixOptions, env: CliEnv): Promise<MatrixJob[]> {
  const selections = [...opts.vendor.map((v) => ['--vendor', v]), ...opts.pipeline.map((p) => ['--pipeline', p])];
  if (!selections.length) throw new GuestError('E_USAGE', 'matrix: name the pipelines: --vendor NAME or --pipeline FILE, each repeatable');
  const common = [...opts.set.flatMap((s) => ['--set', s]), ...opts.fragment.flatMap((f) => ['--fragment', f])];
  const jobs: MatrixJob[] = [];
  const pipelines = new Set<string>();
  const checkInputs = inputChecker(opts, env);
  for (const selection of selections) {
    const [flag, value] = selection as [string, string];
    const base = env.loadGraph({ vendor: flag === '--vendor' ? value : undefined, pipeline: flag === '--pipeline' ? value : undefined, set: opts.set, fragment: opts.fragment, outDir: 'out' });
    const name = base.graph.pipeline;
    if (pipelines.has(name)) throw new GuestError('E_USAGE', `matrix: pipeline ${name} is named twice (${selection.join(' ')}); name each pipeline once`);
    pipelines.add(name);
    const combinations = base.combinations?.length ? base.combinations : [{ values: {} }];
    for (const { values } of combinations) {
      const sets = Object.entries(values).map(([k, v]) => setText(k, v));
      const label = sets.length ? `${name} (${describe(values)})` : name;
      let graph = base.graph;
      try {
        if (sets.length) graph = env.loadGraph({ vendor: flag === '--vendor' ? value : undefined, pipeline: flag === '--pipeline' ? value : undefined, set: [...opts.set, ...sets], fragment: opts.fragment, outDir: 'out' }).graph;
        await checkInputs(graph);
      } catch (err) {
        if (isGuestError(err) && sets.length) throw new GuestError(err.code, `matrix combination ${label}: ${err.message}`, { cause: err, details: err.details });
        throw err;
      }
      const args = [...selection, ...common, ...sets.flatMap((s) => ['--set', s])];
      jobs.push({ id: uniqueId(jobs, jobSlug([name, ...Object.values(values).map((v) => (Array.isArray(v) ? v.join('+') : String(v)))])), name: label, pipeline: name, args, graph });
    }
  }
  return jobs;
}

/** What `plan` checks before a build: every task's own inputs, without the network or a write. */
type InputCheck = (graph: TaskGraph) => Promise<void>;

/** One read-only cache and digest memo for every job's check (the same input files recur across jobs). */
function inputChecker(opts: MatrixOptions, env: CliEnv): InputCheck {
  const { store, memo } = openCacheReadOnly({ ...opts, vendor: undefined, pipeline: undefined, outDir: 'out' }, env.env);
  return async (graph) => {
    const signals = abortOnSignals(() => undefined);
    try {
      await planRun(graph, {}, { steps: env.steps, store, memo, signal: signals.signal, network: false });
    } finally {
      signals.dispose();
    }
  };
}

function uniqueId(jobs: MatrixJob[], id: string): string {
  let candidate = id;
  for (let n = 2; jobs.some((j) => j.id === candidate); n++) candidate = `${id}-${n}`;
  return candidate;
}

/** What an Argo workflow cannot run without, checked before anything is printed. */
function argoOptions(opts: MatrixOptions, jobs: MatrixJob[], env: CliEnv) {
  if (!opts.image) throw new GuestError('E_USAGE', 'matrix --format argo: give --image IMAGE, the container image with gpu-guest and its host tools that every node runs');
  const remoteCache = opts.remoteCache ?? (env.env.GPU_GUEST_REMOTE_CACHE || undefined);
  if (!remoteCache) {
    throw new GuestError('E_USAGE', 'matrix --format argo: give --remote-cache URL (or GPU_GUEST_REMOTE_CACHE): each node runs in its own pod and gets its inputs only from the shared remote cache');
  }
  if (!/^https?:\/\/[^/]+/.test(remoteCache)) throw new GuestError('E_USAGE', `--remote-cache ${redact(remoteCache)}: expected an http:// or https:// URL`);
  if (/^https?:\/\/[^/]*@/.test(remoteCache)) {
    throw new GuestError('E_USAGE', `--remote-cache ${redact(remoteCache)}: a credential in the URL would be written into the workflow; put the token in the Secret ${opts.remoteCacheSecret} (key token) instead`);
  }
  // Argo expands {{…}} in parameter values: a value holding one would not reach gpu-guest as written
  const templated = jobs.flatMap((j) => j.args).find((a) => a.includes('{{'));
  if (templated) throw new GuestError('E_USAGE', `matrix --format argo: ${templated} holds "{{", which Argo would expand as a template expression; remove it from the value`);
  if (!/^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/.test(opts.remoteCacheSecret)) throw new GuestError('E_USAGE', `--remote-cache-secret ${opts.remoteCacheSecret}: expected a Kubernetes object name (lowercase letters, digits and -)`);
  if (!/^[a-z0-9]([-a-z0-9.]*)$/.test(opts.generateName)) throw new GuestError('E_USAGE', `--generate-name ${opts.generateName}: expected a Kubernetes name prefix (lowercase letters, digits, - and .)`);
  return { image: opts.image, remoteCache, tokenSecret: opts.remoteCacheSecret, generateName: opts.generateName, version: gpuGuestVersion() };
}
