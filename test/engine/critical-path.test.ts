import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { criticalPath, criticalPathLine } from '../../src/engine/report/critical-path.js';
import { execGraph, harness, run, testDir } from '../helpers.js';

describe('criticalPath', () => {
  it('is the longest chain of dependencies by run time; cached tasks weigh nothing', () => {
    // a → (b 5 s | c 1 s) → d: the path goes through b
    const tasks = [
      { id: 'a', deps: [], ranMs: 2000 },
      { id: 'b', deps: ['a'], ranMs: 5000 },
      { id: 'c', deps: ['a'], ranMs: 1000 },
      { id: 'd', deps: ['b', 'c'], ranMs: 500 },
      { id: 'e', deps: [], ranMs: 7000 },
    ];
    expect(criticalPath(tasks)).toEqual({ tasks: ['a', 'b', 'd'], durationMs: 7500 });
    // with a cached (0 ms), the rest of its chain still counts, and a lone long task can win
    expect(criticalPath(tasks.map((t) => (t.id === 'a' ? { ...t, ranMs: 0 } : t)))).toEqual({ tasks: ['e'], durationMs: 7000 });
    expect(criticalPath(tasks.map((t) => ({ ...t, ranMs: 0 })))).toEqual({ tasks: [], durationMs: 0 });
    expect(criticalPathLine({ tasks: ['a', 'b', 'd'], durationMs: 7500 }, 8000, (ms) => `${ms / 1000}s`)).toBe('critical path 7.5s (93.8 % of the wall 8s): a → b → d');
    expect(criticalPathLine({ tasks: [], durationMs: 0 }, 10, String)).toBe('critical path: nothing ran');
  });

  it('a build reports it in its last lines, the trace and --summary, with gpu-guest\'s own peak memory', async () => {
    const dir = testDir();
    const args = execGraph(dir, [
      { id: 'slow', script: 'sleep 1.5; echo > a' },
      { id: 'fast', script: 'echo > b' },
      { id: 'after', deps: ['slow', 'fast'], script: 'echo > c' },
    ]);
    const summary = join(dir, 'summary.json');
    const r = await run(harness, ['build', ...args, '--summary', summary]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/critical path \d+(\.\d+)? m?s \(\d+\.\d % of the wall \d+(\.\d+)? m?s\): slow → after\n/);
    const s = JSON.parse(readFileSync(summary, 'utf8')) as { criticalPath: { tasks: string[]; durationMs: number }; peakRssBytes: number; durationMs: number };
    expect(s.criticalPath.tasks).toEqual(['slow', 'after']);
    expect(s.criticalPath.durationMs).toBeGreaterThanOrEqual(1500);
    expect(s.criticalPath.durationMs).toBeLessThanOrEqual(s.durationMs);
    expect(s.peakRssBytes).toBeGreaterThan(20 * 1024 * 1024);
    expect(s.peakRssBytes).toBeLessThan(1024 * 1024 * 1024);
    const trace = JSON.parse(readFileSync(join(dir, 'out/demo/logs/trace.json'), 'utf8')) as { traceEvents: { name: string; ph: string; args?: { critical?: boolean; criticalPath?: string[] } }[] };
    expect(trace.traceEvents.filter((e) => e.args?.critical).map((e) => e.name).sort()).toEqual(['after', 'slow']);
    expect(trace.traceEvents.find((e) => e.name === 'run')!.args!.criticalPath).toEqual(['slow', 'after']);
    // nothing to run: nothing on the path
    const again = await run(harness, ['build', ...args]);
    expect(again.stdout).toContain('critical path: nothing ran');
  });
});
