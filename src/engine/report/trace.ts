import { writeFileSync } from 'node:fs';
import { redact } from '../../model/redact.js';
import type { EngineEvent, EngineListener } from '../events.js';

interface TraceEvent {
  name: string;
  cat: string;
  ph: 'X' | 'M' | 'i';
  ts: number;
  dur?: number;
  pid: number;
  tid: number;
  s?: 'g' | 'p' | 't';
  args?: Record<string, unknown>;
}

/**
 * Writes a Chrome trace-format file (opens in Perfetto / chrome://tracing) when the run ends:
 * one complete event per task, on the lowest lane free when it started, so overlap is visible.
 */
export function createTraceReporter(file: string): EngineListener {
  let origin = 0;
  const starts = new Map<string, { time: number; lane: number }>();
  const busy = new Set<number>();
  const events: TraceEvent[] = [];
  return (e: EngineEvent) => {
    if (e.type === 'run:start') {
      origin = e.time;
      events.push({ name: 'process_name', cat: '__metadata', ph: 'M', ts: 0, pid: 1, tid: 0, args: { name: `gpu-guest ${e.pipeline}` } });
    } else if (e.type === 'task:start') {
      let lane = 1;
      while (busy.has(lane)) lane++;
      busy.add(lane);
      starts.set(e.id, { time: e.time, lane });
    } else if (e.type === 'task:end') {
      const s = starts.get(e.id);
      if (s) {
        busy.delete(s.lane);
        events.push({ name: e.id, cat: e.status, ph: 'X', ts: (s.time - origin) * 1000, dur: (e.time - s.time) * 1000, pid: 1, tid: s.lane, args: { status: e.status, ...(e.error ? { error: e.error.message } : {}) } });
      } else {
        events.push({ name: `${e.id} (${e.status})`, cat: e.status, ph: 'i', s: 't', ts: (e.time - origin) * 1000, pid: 1, tid: 0 });
      }
    } else if (e.type === 'run:end') {
      // the tasks on the critical path carry critical: true, and the run says how long the path was
      for (const ev of events) if (ev.ph === 'X' && e.criticalPath.tasks.includes(ev.name)) ev.args = { ...ev.args, critical: true };
      events.push({ name: 'run', cat: e.status, ph: 'X', ts: 0, dur: e.durationMs * 1000, pid: 1, tid: 0, args: { criticalPath: e.criticalPath.tasks, criticalPathMs: e.criticalPath.durationMs } });
      writeFileSync(file, `${redact(JSON.stringify({ traceEvents: events, displayTimeUnit: 'ms' }))}\n`);
    }
  };
}
