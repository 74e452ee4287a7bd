/** The chain of tasks that decided a run's wall time. */
export interface CriticalPath {
  /** Task ids from the first to the last; empty when nothing ran. */
  tasks: string[];
  /** The sum of their run times. */
  durationMs: number;
}

/**
 * The longest chain of dependencies through the tasks of a run, weighing each by the time it ran
 * (a cached or skipped task weighs nothing): what the wall time cannot go below however many
 * cores there are. `tasks` must list every task after its dependencies.
 */
export function criticalPath(tasks: { id: string; deps: string[]; ranMs: number }[]): CriticalPath {
  const best = new Map<string, { durationMs: number; via?: string }>();
  for (const t of tasks) {
    let via: string | undefined;
    let before = 0;
    for (const d of t.deps) {
      const b = best.get(d);
      if (b && b.durationMs > before) [before, via] = [b.durationMs, d];
    }
    best.set(t.id, { durationMs: before + t.ranMs, via });
  }
  let end: string | undefined;
  for (const [id, b] of best) if (b.durationMs > 0 && (!end || b.durationMs > best.get(end)!.durationMs)) end = id;
  const chain: string[] = [];
  for (let id = end; id; id = best.get(id)!.via) if (tasks.find((t) => t.id === id)!.ranMs > 0 || chain.length) chain.unshift(id);
  return { tasks: chain.filter((id) => tasks.find((t) => t.id === id)!.ranMs > 0), durationMs: end ? best.get(end)!.durationMs : 0 };
}

/** `critical path 9m 40s (99.6 % of the wall): kernel-source → kernel-config → kernel-build` */
export function criticalPathLine(path: CriticalPath, wallMs: number, format: (ms: number) => string): string {
  if (!path.tasks.length || wallMs <= 0) return 'critical path: nothing ran';
  return `critical path ${format(path.durationMs)} (${((path.durationMs / wallMs) * 100).toFixed(1)} % of the wall ${format(wallMs)}): ${path.tasks.join(' → ')}`;
}
