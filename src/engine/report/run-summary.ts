import type { TaskResult } from '../../model/task.js';
import { formatBytes, formatDuration } from './format.js';
import { criticalPathLine, type CriticalPath } from './critical-path.js';

/** One published file, as manifest.json lists it. */
export type PublishedArtifact = { path: string; task: string; size: number; sha256: string };

/** What a build did, for dashboards (--summary FILE) and GitHub's step summary. */
export type RunSummary = {
  pipeline: string;
  gpuGuest: string;
  status: 'succeeded' | 'failed' | 'interrupted';
  durationMs: number;
  tasks: { id: string; kind: string; key: string; status: string; durationMs: number }[];
  artifacts: PublishedArtifact[];
  error?: { task: string; code: string; message: string };
  /** The chain of tasks that decided the wall time, and how long they ran. */
  criticalPath: CriticalPath;
  /** The most memory gpu-guest's own process held (its tools, such as make, not counted). */
  peakRssBytes: number;
};

/** The summary of a finished run: each task in plan order with its key and status, the artifacts published. */
export function runSummary(o: { pipeline: string; gpuGuest: string; status: RunSummary['status']; durationMs: number; planned: { id: string; kind: string; key: string }[]; results: TaskResult[]; artifacts: PublishedArtifact[]; failure?: { id: string; error: { code: string; message: string } }; criticalPath: CriticalPath; peakRssBytes: number }): RunSummary {
  const byId = new Map(o.results.map((r) => [r.id, r]));
  return {
    pipeline: o.pipeline,
    gpuGuest: o.gpuGuest,
    status: o.status,
    durationMs: o.durationMs,
    tasks: o.planned.map((t) => {
      const r = byId.get(t.id);
      return { id: t.id, kind: t.kind, key: r?.key || t.key, status: r?.status ?? 'not run', durationMs: r?.durationMs ?? 0 };
    }),
    artifacts: o.artifacts,
    ...(o.failure ? { error: { task: o.failure.id, code: o.failure.error.code, message: o.failure.error.message } } : {}),
    criticalPath: o.criticalPath,
    peakRssBytes: o.peakRssBytes,
  };
}

/** The summary as GitHub-flavoured Markdown (GITHUB_STEP_SUMMARY). */
export function summaryMarkdown(s: RunSummary): string {
  const cell = (v: string) => v.replace(/\|/g, '\\|').replace(/\n/g, ' ');
  const lines = [
    `### gpu-guest: ${cell(s.pipeline)} ${s.status} in ${formatDuration(s.durationMs)}`,
    '',
    ...(s.error ? [`**${s.error.code}** in task \`${s.error.task}\`: ${cell(s.error.message)}`, ''] : []),
    cell(criticalPathLine(s.criticalPath, s.durationMs, formatDuration)),
    '',
    '| task | status | duration | key |',
    '|---|---|---|---|',
    ...s.tasks.map((t) => `| ${t.id} | ${t.status} | ${t.status === 'succeeded' || t.status === 'failed' ? formatDuration(t.durationMs) : ''} | \`${t.key.slice(0, 12)}\` |`),
  ];
  if (s.artifacts.length) {
    lines.push('', '| artifact | size | sha256 |', '|---|---|---|', ...s.artifacts.map((a) => `| ${cell(a.path)} | ${formatBytes(a.size)} | \`${a.sha256.slice(0, 16)}…\` |`));
  }
  return `${lines.join('\n')}\n`;
}
