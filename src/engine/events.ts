import type { Json } from './types.js';

/** How `plan` judges a task. */
export type PlanStatus = 'cached' | 'run' | 'skip';

export interface PlannedTask {
  id: string;
  kind: string;
  title: string;
  key: string;
  deps: string[];
  status: PlanStatus;
  /** Whether an entry for the key exists (a skipped or forced task may be cached too). */
  cached: boolean;
  /** Why it must run (`parameter kernel.version changed`, `forced`, `not built before`) or why skipped. */
  reasons: string[];
  /** Parameters after resolution (the exact kernel version a range resolved to …). */
  params: { [key: string]: Json };
  /** Parameters resolve() added or changed (the exact version a range resolved to …). */
  resolved: { [key: string]: Json };
  /** Input files by role, with their digests. */
  inputs: { [role: string]: Json };
}

export type TaskEndStatus = 'succeeded' | 'cached' | 'failed' | 'cancelled' | 'skipped';

/** Everything the engine tells reporters. Reporters subscribe; steps never print. */
export type EngineEvent =
  | { type: 'run:start'; time: number; pipeline: string; tasks: PlannedTask[] }
  | { type: 'task:start'; time: number; id: string }
  | { type: 'task:wait'; time: number; id: string; holder: string }
  | { type: 'task:log'; time: number; id: string; line: string }
  | { type: 'task:progress'; time: number; id: string; label: string; done: number; total?: number }
  | { type: 'task:end'; time: number; id: string; status: TaskEndStatus; durationMs: number; error?: { code: string; message: string; details: string[] }; logFile?: string }
  | { type: 'run:end'; time: number; status: 'succeeded' | 'failed' | 'interrupted'; durationMs: number; results: TaskResult[] };

export interface TaskResult {
  id: string;
  status: TaskEndStatus;
  durationMs: number;
  key: string;
}

export type EngineListener = (event: EngineEvent) => void;

/** A typed fan-out of engine events. A listener that throws never stops the build. */
export class EventBus {
  private readonly listeners: EngineListener[] = [];

  subscribe(listener: EngineListener): void {
    this.listeners.push(listener);
  }

  emit(event: EngineEvent): void {
    for (const l of this.listeners) {
      try {
        l(event);
      } catch {
        // a broken reporter must not break the build
      }
    }
  }
}
