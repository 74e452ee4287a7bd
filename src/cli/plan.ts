import { openCacheReadOnly, type CliEnv, type PipelineOptions } from './context.js';
import { planRun, type Plan, type Selection } from '../engine/plan.js';
import { abortOnSignals } from './signals.js';
import { redact, redactJson } from '../model/redact.js';
import type { Json } from '../model/json.js';
import { describeResolved, lockOfRun, withBundledPipeline } from './lock.js';

export interface PlanOptions extends PipelineOptions, Selection {
  json?: boolean;
  dot?: boolean;
  /** Ask the mirrors to resolve version ranges (network reads; still writes nothing). Default off. */
  resolve?: boolean;
  /** Plan with the lock's resolutions (checked against the pipeline first). */
  lock?: string;
  /** Plan with the lock a bundle carries. */
  bundle?: string;
}

/** gpu-guest plan: what build would do, and why, without doing it. */
export async function planCommand(opts: PlanOptions, env: CliEnv): Promise<number> {
  const loaded = env.loadGraph(await withBundledPipeline(opts));
  const { store, memo } = openCacheReadOnly(opts, env.env);
  const signals = abortOnSignals(() => undefined);
  try {
    const lock = await lockOfRun(opts, loaded, env);
    const plan = await planRun(loaded.graph, opts, { steps: env.steps, store, memo, signal: signals.signal, network: opts.resolve ?? false, lock });
    if (opts.json) env.stdout(`${JSON.stringify(redactJson({ pipeline: plan.pipeline, tasks: plan.tasks } as unknown as Json), null, 2)}\n`);
    else if (opts.dot) env.stdout(planToDot(plan));
    else env.stdout(redact(planToText(plan)));
    return 0;
  } finally {
    signals.dispose();
  }
}

export function planToText(plan: Plan): string {
  const lines = [`pipeline ${plan.pipeline}`];
  for (const t of plan.tasks) {
    // a key that waits for an upstream's output (early cutoff) is known only once that one has run
    lines.push(`${t.status.padEnd(6)} ${t.id.padEnd(14)} ${(t.key ? t.key.slice(0, 12) : 'after '.concat(t.keyAfter ?? '')).padEnd(12)}  ${t.title}`);
    if (t.deps.length) lines.push(`         after: ${t.deps.join(', ')}`);
    for (const r of t.reasons) lines.push(`         why: ${r}`);
    const resolved = Object.entries(t.resolved).map(([k, v]) => describeResolved(k, v));
    if (resolved.length) lines.push(`         resolved: ${resolved.join(', ')}`);
    for (const [role, value] of Object.entries(t.inputs)) {
      const items = Array.isArray(value) ? value : [value];
      const names = items.map((v) => (v && typeof v === 'object' && !Array.isArray(v) ? String(v.name) : String(v)));
      if (names.length) lines.push(`         ${role}: ${names.join(', ')}`);
    }
  }
  const run = plan.tasks.filter((t) => t.status === 'run').length;
  lines.push(`${run} to run, ${plan.tasks.filter((t) => t.status === 'cached').length} cached, ${plan.tasks.filter((t) => t.status === 'skip').length} skipped`);
  return `${lines.join('\n')}\n`;
}

export function planToDot(plan: Plan): string {
  const colour = { run: 'orange', cached: 'palegreen', skip: 'lightgrey' } as const;
  const lines = [`digraph "${plan.pipeline}" {`, '  rankdir=LR;', '  node [shape=box, style=filled];'];
  for (const t of plan.tasks) lines.push(`  "${t.id}" [fillcolor=${colour[t.status]}, label="${t.id}\\n${t.status}"];`);
  for (const t of plan.tasks) for (const d of t.deps) lines.push(`  "${d}" -> "${t.id}";`);
  lines.push('}');
  return `${lines.join('\n')}\n`;
}
