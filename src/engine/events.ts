import type { PlannedTask, TaskEndStatus, TaskResult } from '../model/task.js';
import type { CriticalPath } from './report/critical-path.js';

export type { PlannedTask, TaskEndStatus, TaskResult };

/** Everything the engine tells reporters. Reporters subscribe; steps never print. */
export type EngineEvent =
  | { type: 'run:start'; time: number; pipeline: string; tasks: PlannedTask[] }
  | { type: 'task:start'; time: number; id: string }
  | { type: 'task:wait'; time: number; id: string; holder: string }
  | { type: 'task:log'; time: number; id: string; line: string }
  | { type: 'task:progress'; time: number; id: string; label: string; done: number; total?: number }
  | { type: 'task:end'; time: number; id: string; status: TaskEndStatus; durationMs: number; error?: { code: string; message: string; details: string[] }; logFile?: string; note?: string }
  | { type: 'run:end'; time: number; status: 'succeeded' | 'failed' | 'interrupted'; durationMs: number; results: TaskResult[]; criticalPath: CriticalPath };


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
