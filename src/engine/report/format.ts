import type { TaskResult } from '../events.js';

export function formatDuration(ms: number): string {
  if (ms < 1000) return `${ms} ms`;
  const s = ms / 1000;
  if (s < 60) return `${s.toFixed(1)} s`;
  const m = Math.floor(s / 60);
  return `${m} min ${Math.round(s - m * 60)} s`;
}

export function formatBytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB'];
  let v = n;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${v.toFixed(i === 0 ? 0 : 1)} ${units[i]}`;
}

export function formatProgress(label: string, done: number, total?: number): string {
  if (!total) return `${label} ${formatBytes(done)}`;
  return `${label} ${formatBytes(done)} / ${formatBytes(total)} (${Math.floor((done / total) * 100)}%)`;
}

/** The closing table: each task, cached or run, its duration. */
export function summaryLines(results: TaskResult[], status: string, durationMs: number): string[] {
  const width = Math.max(4, ...results.map((r) => r.id.length));
  const lines = results.map((r) => `  ${r.id.padEnd(width)}  ${r.status.padEnd(9)}  ${r.status === 'succeeded' || r.status === 'failed' ? formatDuration(r.durationMs) : ''}`.trimEnd());
  return ['summary:', ...lines, `  ${'total'.padEnd(width)}  ${status.padEnd(9)}  ${formatDuration(durationMs)}`];
}
