import { redact } from '../../model/redact.js';
import type { EngineEvent, EngineListener } from '../events.js';

/** One JSON object per line. Task log lines are left to the log files unless asked for. */
export function createJsonReporter(write: (line: string) => void, options: { logLines?: boolean } = {}): EngineListener {
  return (e: EngineEvent) => {
    if (e.type === 'task:log' && !options.logLines) return;
    write(redact(JSON.stringify(e)));
  };
}
