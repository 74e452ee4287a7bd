import { canonicalJson, sha256Hex, type Json, type JsonObject } from '../model/json.js';
import { taskDeps } from '../model/task.js';
import { topoOrder } from '../engine/graph.js';
import { shellLine, type MatrixJob } from './jobs.js';

export interface ArgoOptions {
  /** The container image with gpu-guest and its host tools (`gpu-guest doctor` lists them). */
  image: string;
  /** The shared remote cache every node reads its inputs from and writes its result to. */
  remoteCache: string;
  /** Kubernetes Secret whose `token` key is the remote cache's bearer token (optional at run time). */
  tokenSecret: string;
  /** metadata.generateName: Argo appends a random suffix. */
  generateName: string;
  /** gpu-guest's version, for the labels. */
  version: string;
}

/** Where each node keeps its local cache (an emptyDir: the remote cache is what nodes share). */
const NODE_CACHE = '/var/cache/gpu-guest';

/** One node of the DAG: one gpu-guest task of one or more jobs whose task is the same. */
export interface ArgoNode {
  name: string;
  task: string;
  /** The selecting arguments of the first job that has this task. */
  args: string[];
  dependencies: string[];
  /** The ids of the jobs this node serves. */
  jobs: string[];
}

/**
 * The DAG of the jobs: one node per task, its dependencies the task graph's. A task that two jobs
 * share exactly (same step, parameters, input files and upstream tasks: what its cache key is made
 * of) is one node, so a rootfs common to two kernels is built once.
 */
export function argoNodes(jobs: MatrixJob[]): ArgoNode[] {
  const nodes = new Map<string, ArgoNode>();
  for (const job of jobs) {
    const identity = new Map<string, string>();
    for (const task of topoOrder(job.graph)) {
      const upstream = Object.fromEntries(Object.entries(task.upstream).map(([role, id]) => [role, identity.get(id)!]));
      const id = sha256Hex(canonicalJson({ kind: task.kind, params: task.params, files: task.files as Json, upstream } as JsonObject));
      identity.set(task.id, id);
      const name = `${task.id}-${id.slice(0, 10)}`;
      const known = nodes.get(name);
      if (known) {
        known.jobs.push(job.id);
        continue;
      }
      const dependencies = taskDeps(task).map((d) => `${d}-${identity.get(d)!.slice(0, 10)}`);
      nodes.set(name, { name, task: task.id, args: job.args, dependencies, jobs: [job.id] });
    }
  }
  return [...nodes.values()];
}

/** An Argo Workflows `Workflow` (argoproj.io/v1alpha1) that builds the jobs one task per pod. */
export function argoWorkflow(jobs: MatrixJob[], o: ArgoOptions): JsonObject {
  const tasks = argoNodes(jobs).map((n) => ({
    name: n.name,
    template: 'gpu-guest-task',
    arguments: {
      parameters: [
        { name: 'task', value: n.task },
        { name: 'args', value: shellLine(n.args) },
        // shown in Argo's UI: which matrix jobs this node builds the task for
        { name: 'jobs', value: n.jobs.join(' ') },
      ],
    },
    ...(n.dependencies.length ? { dependencies: n.dependencies } : {}),
  }));
  return {
    apiVersion: 'argoproj.io/v1alpha1',
    kind: 'Workflow',
    metadata: {
      generateName: o.generateName,
      labels: { 'app.kubernetes.io/name': 'gpu-guest', 'app.kubernetes.io/version': o.version },
      annotations: { 'gpu-guest/jobs': jobs.map((j) => j.id).join(' ') },
    },
    spec: {
      entrypoint: 'pipelines',
      volumes: [{ name: 'cache', emptyDir: {} }],
      templates: [
        { name: 'pipelines', dag: { tasks } },
        {
          name: 'gpu-guest-task',
          inputs: { parameters: [{ name: 'task' }, { name: 'args' }, { name: 'jobs' }] },
          container: {
            image: o.image,
            command: ['sh', '-c'],
            // args is one shell line that gpu-guest matrix quoted word by word
            args: [`exec gpu-guest build --progress plain --cache-dir ${NODE_CACHE} --only {{inputs.parameters.task}} {{inputs.parameters.args}}`],
            env: [
              { name: 'GPU_GUEST_REMOTE_CACHE', value: o.remoteCache },
              { name: 'GPU_GUEST_REMOTE_CACHE_TOKEN', valueFrom: { secretKeyRef: { name: o.tokenSecret, key: 'token', optional: true } } },
            ],
            // loop devices, mounts and chroots of the rootfs and image steps
            securityContext: { privileged: true },
            volumeMounts: [{ name: 'cache', mountPath: NODE_CACHE }],
          },
        },
      ],
    },
  };
}
