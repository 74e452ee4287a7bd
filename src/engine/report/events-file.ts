import { appendFileSync, writeFileSync } from 'node:fs';
import { redact } from '../../model/redact.js';
import type { EngineEvent, EngineListener } from '../events.js';

/** Every event except log lines, as JSON lines in out/<pipeline>/logs/events.jsonl. */
export function createEventsFileReporter(file: string): EngineListener {
  writeFileSync(file, '');
  return (e: EngineEvent) => {
    if (e.type === 'task:log') return;
    appendFileSync(file, `${redact(JSON.stringify(e))}\n`);
  };
}
