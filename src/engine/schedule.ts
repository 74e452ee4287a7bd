import type { TaskEndStatus } from '../model/task.js';

/** A task as the scheduler sees it: what it waits for and what it occupies. */
export interface ScheduledTask {
  id: string;
  deps: string[];
  /** 'all': occupies every core; two such tasks never run at once. */
  cpu: 'all' | 1;
  /** run: to be run; cached: done before the run starts; unselected: not part of this run (--until, --only). */
  start: 'run' | 'cached' | 'unselected';
  /** Whether a cache entry exists for it (an unselected task with an entry can feed a selected one). */
  hasEntry: boolean;
}

export type ScheduleState = 'pending' | 'running' | 'unselected' | TaskEndStatus;

/** What the executor is told to do next. */
export type Decision = { type: 'start'; id: string } | { type: 'skip'; id: string; because: string };

export interface ScheduleOptions {
  /** Most tasks running at once. */
  jobs: number;
  /** After a failure, keep starting tasks that do not depend on it. */
  keepGoing: boolean;
}

/**
 * The scheduler as a small state machine, with no I/O: which tasks are ready, which must be
 * skipped because an input failed, and when the run is over. The executor (run.ts) tells it what
 * finished and carries out its decisions.
 */
export class Schedule {
  private readonly state = new Map<string, ScheduleState>();
  private readonly byId: Map<string, ScheduledTask>;
  private stopping = false;

  constructor(
    private readonly tasks: ScheduledTask[],
    private readonly opts: ScheduleOptions,
  ) {
    this.byId = new Map(tasks.map((t) => [t.id, t]));
    for (const t of tasks) this.state.set(t.id, t.start === 'run' ? 'pending' : t.start === 'cached' ? 'cached' : 'unselected');
  }

  stateOf(id: string): ScheduleState {
    return this.state.get(id)!;
  }

  get running(): string[] {
    return this.tasks.filter((t) => this.state.get(t.id) === 'running').map((t) => t.id);
  }

  /** Start nothing new (Ctrl-C, or a failure without keepGoing); running tasks finish. */
  stop(): void {
    this.stopping = true;
  }

  /**
   * The decisions to carry out now, in task order: tasks to skip because an input did not
   * succeed, and tasks to start within the job and cpu limits. Marks them as decided.
   */
  next(): Decision[] {
    const decisions: Decision[] = [];
    let runningCount = this.running.length;
    let cpuAllBusy = this.running.some((id) => this.byId.get(id)!.cpu === 'all');
    for (const t of this.tasks) {
      if (this.state.get(t.id) !== 'pending') continue;
      const broken = t.deps.find((d) => this.isBroken(d));
      if (broken) {
        this.state.set(t.id, 'skipped');
        decisions.push({ type: 'skip', id: t.id, because: broken });
        continue;
      }
      if (this.stopping || runningCount >= this.opts.jobs || !t.deps.every((d) => this.isAvailable(d))) continue;
      if (t.cpu === 'all' && cpuAllBusy) continue;
      this.state.set(t.id, 'running');
      runningCount++;
      if (t.cpu === 'all') cpuAllBusy = true;
      decisions.push({ type: 'start', id: t.id });
    }
    return decisions;
  }

  /** A started task ended. */
  finish(id: string, status: TaskEndStatus, hasEntry: boolean): void {
    if (this.state.get(id) !== 'running') throw new Error(`schedule: ${id} finished but was not running`);
    this.state.set(id, status);
    this.byId.get(id)!.hasEntry = hasEntry;
    if (status === 'failed' && !this.opts.keepGoing) this.stopping = true;
  }

  /** Once finished: the tasks that never started, now cancelled. */
  cancelPending(): string[] {
    const left = this.tasks.filter((t) => this.state.get(t.id) === 'pending').map((t) => t.id);
    for (const id of left) this.state.set(id, 'cancelled');
    return left;
  }

  /** Every selected task succeeded or was cached. */
  get allSucceeded(): boolean {
    return this.tasks.every((t) => ['succeeded', 'cached', 'unselected'].includes(this.state.get(t.id)!));
  }

  private isAvailable(id: string): boolean {
    const s = this.state.get(id);
    return s === 'succeeded' || s === 'cached' || (s === 'unselected' && this.byId.get(id)!.hasEntry);
  }

  private isBroken(id: string): boolean {
    const s = this.state.get(id);
    return s === 'failed' || s === 'cancelled' || s === 'skipped';
  }
}
