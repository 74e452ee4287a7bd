import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { findOnPath } from '../sys/which.js';
import { GuestError } from '../model/errors.js';
import { planRun } from '../engine/plan.js';
import { builtEntryOfKind, type TypedEntry } from '../engine/results.js';
import type { VgpuImageResult } from '../model/results.js';
import { findCredentials } from '../sys/registry-auth.js';
import { pushWithApi, pushWithSkopeo, type PushTarget } from '../sys/registry-push.js';
import { TaskLog } from '../sys/task-log.js';
import { openCache, prepareOut, type CliEnv, type PipelineOptions } from './context.js';
import { abortOnSignals } from './signals.js';

export interface PushOptions extends PipelineOptions {
  registryAuth?: string;
  insecureRegistry?: boolean;
  pushWith?: 'auto' | 'skopeo' | 'api';
}

/** gpu-guest push: pushes the built vGPU manager image and writes what to run next for the GPU Operator. */
export async function pushCommand(opts: PushOptions, env: CliEnv): Promise<number> {
  const loaded = env.loadGraph(opts);
  if (!loaded.graph.tasks.some((t) => t.kind === 'vgpu-image')) throw new GuestError('E_USAGE', `push: pipeline ${loaded.graph.pipeline} builds no vGPU manager image (use --vendor nvidia-vgpu)`);
  const { store, memo } = openCache(opts, env.env, env.stderr);
  const logs = prepareOut(loaded.pipelineOut);
  const signals = abortOnSignals(() => undefined);
  const log = new TaskLog(join(logs, 'push.log'));
  try {
    const plan = await planRun(loaded.graph, {}, { steps: env.steps, store, memo, signal: signals.signal, network: false });
    const entry = await builtEntryOfKind(plan, store, 'vgpu-image');
    if (!entry) throw new GuestError('E_NOT_CACHED', 'the vGPU manager image is not built: run gpu-guest build with the same pipeline and flags first (or build --push)');
    return await pushEntry(entry, loaded.pipelineOut, opts, env, log, signals.signal);
  } finally {
    log.close();
    signals.dispose();
  }
}

/** Pushes a built vgpu-image entry; shared by `push` and `build --push`. */
export async function pushEntry(entry: TypedEntry<'vgpu-image'>, pipelineOut: string, opts: PushOptions, env: CliEnv, log: TaskLog, signal: AbortSignal): Promise<number> {
  const { outDir, result } = entry;
  const [host, ...path] = result.repository.split('/');
  const creds = findCredentials(host!, opts.registryAuth, env.env);
  const target: PushTarget = { host: host!, repository: path.join('/'), tag: result.tag, insecure: opts.insecureRegistry ?? false, creds };
  const mode = opts.pushWith ?? 'auto';
  const useSkopeo = mode === 'skopeo' || (mode === 'auto' && (await findOnPath('skopeo')) !== null);
  env.stdout(`pushing ${result.reference} with ${useSkopeo ? 'skopeo' : 'the OCI distribution API'}${creds ? ` (credentials from ${creds.source})` : ''}\n`);
  const layout = join(outDir, result.layout);
  const digest = useSkopeo ? await pushWithSkopeo(log, layout, result.tag, target, signal) : await pushWithApi(log, layout, target, signal);
  env.stdout(`pushed ${result.reference}@${digest}\n`);
  const next = writeOperatorFiles(pipelineOut, result, target, digest);
  const os = nodeOs(result.tag.slice(result.driverVersion.length + 1));
  env.stdout(
    `\nnext, for the GPU Operator (also in ${next.dir}):\n${next.secret}\n\nhelm install gpu-operator nvidia/gpu-operator -n gpu-operator --create-namespace -f ${next.values}\n\n` +
      `The operator appends each node's OS tag to vgpuManager.version: it pulls ${result.reference} on nodes whose /etc/os-release says ${os}; ` +
      `nodes of another OS need an image built with their vgpu.osTag.\n`,
  );
  return 0;
}

/** "ID=ubuntu VERSION_ID=22.04" for the OS tag ubuntu22.04: what the operator reads to make the tag. */
export function nodeOs(osTag: string): string {
  const m = /^([a-z]+)(\d.*)$/.exec(osTag);
  return m ? `ID=${m[1]} VERSION_ID=${m[2]}` : `the OS tag ${osTag}`;
}

/**
 * out/<pipeline>/gpu-operator/: the pull secret command (placeholders, never the password) and helm
 * values. vgpuManager.version is the driver version: the operator appends the node's OS tag itself.
 */
function writeOperatorFiles(pipelineOut: string, result: VgpuImageResult, target: PushTarget, digest: string): { dir: string; secret: string; values: string } {
  const dir = join(pipelineOut, 'gpu-operator');
  mkdirSync(dir, { recursive: true });
  const secret = [
    'kubectl create namespace gpu-operator --dry-run=client -o yaml | kubectl apply -f -',
    `kubectl create secret docker-registry vgpu-registry-secret -n gpu-operator \\`,
    `  --docker-server=${target.host} --docker-username=<USERNAME> --docker-password=<PASSWORD>`,
  ].join('\n');
  writeFileSync(join(dir, 'create-pull-secret.sh'), `#!/bin/sh\n# Creates the pull secret the GPU Operator uses for the vGPU manager image; fill in the placeholders.\n${secret}\n`, { mode: 0o755 });
  const values = join(dir, 'values.yaml');
  const osTag = result.tag.slice(result.driverVersion.length + 1);
  writeFileSync(
    values,
    [
      '# helm values for the NVIDIA GPU Operator with KubeVirt and vGPU, written by gpu-guest push',
      'sandboxWorkloads:',
      '  enabled: true',
      'vgpuManager:',
      '  enabled: true',
      `  repository: ${result.repository.replace(/\/vgpu-manager$/, '')}`,
      '  image: vgpu-manager',
      `  # the operator appends the node's OS tag: ${result.reference} on nodes with ${nodeOs(osTag)}`,
      `  version: "${result.driverVersion}"`,
      `  # or pin this very image on every node, whatever its OS (use only when all run ${osTag}):`,
      `  # version: "${digest}"`,
      '  imagePullSecrets:',
      '    - vgpu-registry-secret',
      '',
    ].join('\n'),
  );
  return { dir, secret, values };
}
