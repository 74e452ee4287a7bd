import { closeSync, mkdirSync, openSync, writeSync } from 'node:fs';
import { dirname } from 'node:path';
import { redact } from '../model/redact.js';
import type { StepLog } from '../model/step.js';

/**
 * One task's log file. Keeps the last lines in memory for the failure report. Everything written
 * passes through redact(): a credential in a URL never reaches a log.
 */
export class TaskLog implements StepLog {
  private readonly fd: number;
  private readonly recent: string[] = [];
  private partial = '';

  constructor(
    readonly file: string,
    private readonly onLine: (line: string) => void = () => undefined,
    private readonly keep = 200,
  ) {
    mkdirSync(dirname(file), { recursive: true });
    this.fd = openSync(file, 'w');
  }

  /** Raw output of a process: written as it comes, split into lines for the tail. */
  write(chunk: string | Buffer): void {
    const text = redact(chunk.toString());
    writeSync(this.fd, text);
    const parts = (this.partial + text).split('\n');
    this.partial = parts.pop() ?? '';
    for (const line of parts) this.remember(line);
  }

  /** One line of the step's own narration. */
  info(line: string): void {
    this.write(`${line}\n`);
  }

  tail(n: number): string[] {
    const lines = this.partial ? [...this.recent, this.partial] : [...this.recent];
    return lines.slice(-n);
  }

  close(): void {
    try {
      closeSync(this.fd);
    } catch {
      // already closed
    }
  }

  private remember(line: string): void {
    this.recent.push(line);
    if (this.recent.length > this.keep) this.recent.shift();
    this.onLine(line);
  }
}

/** A StepLog that keeps its lines in memory, for work that has no task log (preflight checks, a command's own tools). */
export function memoryLog(): StepLog {
  const lines: string[] = [];
  const log: StepLog = {
    write: (chunk) => void lines.push(...chunk.toString().split('\n').filter(Boolean)),
    info: (line) => log.write(`${line}\n`),
    tail: (n) => lines.slice(-n),
  };
  return log;
}
