import type { EngineEvent, EngineListener } from '../events.js';
import { formatDuration, formatProgress, summaryLines } from './format.js';
import { criticalPathLine } from './critical-path.js';

/** Timestamped lines for CI logs and pipes. Progress is throttled to one line per task every 5 s. */
export function createPlainReporter(write: (line: string) => void, now: () => Date = () => new Date()): EngineListener {
  const lastProgress = new Map<string, number>();
  const stamp = () => now().toISOString().slice(11, 19);
  const out = (text: string) => write(`${stamp()} ${text}`);
  return (e: EngineEvent) => {
    switch (e.type) {
      case 'run:start': {
        const run = e.tasks.filter((t) => t.status === 'run').length;
        out(`pipeline ${e.pipeline}: ${e.tasks.length} tasks, ${run} to run`);
        break;
      }
      case 'task:start':
        out(`start  ${e.id}`);
        break;
      case 'task:wait':
        out(`wait   ${e.id}: cache entry is locked by ${e.holder}; waiting for it to finish`);
        break;
      case 'task:progress': {
        const last = lastProgress.get(e.id) ?? 0;
        const finished = e.total !== undefined && e.done >= e.total;
        if (e.time - last >= 5000 || finished) {
          lastProgress.set(e.id, e.time);
          out(`       ${e.id}: ${formatProgress(e.label, e.done, e.total)}`);
        }
        break;
      }
      case 'task:end': {
        const took = e.status === 'succeeded' || e.status === 'failed' ? ` in ${formatDuration(e.durationMs)}` : '';
        const why = e.error ? `: ${e.error.code}: ${e.error.message}` : e.note ? `: ${e.note}` : '';
        out(`${e.status.padEnd(6)} ${e.id}${took}${why}`);
        break;
      }
      case 'run:end':
        for (const line of summaryLines(e.results, e.status, e.durationMs)) write(line);
        write(`  ${criticalPathLine(e.criticalPath, e.durationMs, formatDuration)}`);
        break;
      default:
        break;
    }
  };
}
