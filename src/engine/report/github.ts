import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import type { EngineListener } from '../events.js';
import { formatDuration } from './format.js';

/** The tail of a task's log that a finished task's log group shows. */
const GROUP_TAIL_LINES = 100;

/**
 * GitHub Actions workflow commands (GITHUB_ACTIONS=true): each task that ran gets a collapsible log
 * group with the tail of its log, and a failed task an error annotation with its code and message.
 * The log lines are wrapped in stop-commands, so a line a build prints can never act as a command.
 */
export function createGithubReporter(write: (line: string) => void): EngineListener {
  return (e) => {
    if (e.type !== 'task:end' || (e.status !== 'succeeded' && e.status !== 'failed')) return;
    write(`::group::${escapeData(`${e.id}: ${e.status} in ${formatDuration(e.durationMs)}`)}`);
    if (e.logFile && existsSync(e.logFile)) {
      const lines = readFileSync(e.logFile, 'utf8').split('\n');
      if (lines.at(-1) === '') lines.pop();
      const token = randomBytes(16).toString('hex');
      write(`::stop-commands::${token}`);
      if (lines.length > GROUP_TAIL_LINES) write(`… ${lines.length - GROUP_TAIL_LINES} earlier lines in ${e.logFile}`);
      for (const line of lines.slice(-GROUP_TAIL_LINES)) write(line);
      write(`::${token}::`);
    }
    write('::endgroup::');
    if (e.status === 'failed' && e.error) {
      const text = [e.error.message, ...e.error.details].join('\n');
      write(`::error title=${escapeProperty(`${e.error.code} in task ${e.id}`)}::${escapeData(text)}`);
    }
  };
}

/** A workflow command's message: %, CR and LF escaped as the runner expects. */
export function escapeData(s: string): string {
  return s.replace(/%/g, '%25').replace(/\r/g, '%0D').replace(/\n/g, '%0A');
}

/** A workflow command's property value: also ':' and ','. */
export function escapeProperty(s: string): string {
  return escapeData(s).replace(/:/g, '%3A').replace(/,/g, '%2C');
}
