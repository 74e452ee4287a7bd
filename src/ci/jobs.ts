import { quote } from '../cli/verify-init.js';
import type { TaskGraph } from '../model/task.js';

/** One CI job: a pipeline with one matrix combination's values, as `gpu-guest build` arguments. */
export interface MatrixJob {
  /** Unique among the jobs, safe as a folder, artifact or Kubernetes name part: `nvidia-6.1-550.127.05`. */
  id: string;
  /** For people: `nvidia (kernel.version=6.1, driver.version=550.127.05)`. */
  name: string;
  /** The pipeline's name (its out/ folder). */
  pipeline: string;
  /** The arguments that select this job's pipeline and values, in order (`--vendor nvidia --set …`). */
  args: string[];
  /** The job's task graph, for workflows that run one task per node. */
  graph: TaskGraph;
}

/** The arguments as one shell line: a word is quoted only when the shell would change it. */
export function shellLine(args: string[]): string {
  return args.map((a) => (/^[A-Za-z0-9_./:=,+@%-]+$/.test(a) ? a : quote(a))).join(' ');
}

/** Lowercase letters, digits, dots and dashes only; what a job id may be made of. */
export function jobSlug(parts: string[]): string {
  const slug = parts
    .join('-')
    .toLowerCase()
    .replace(/[^a-z0-9.-]+/g, '-')
    .replace(/-{2,}/g, '-')
    .replace(/^[-.]+|[-.]+$/g, '');
  return slug || 'job';
}
