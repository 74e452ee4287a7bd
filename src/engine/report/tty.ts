import { Listr, type ListrTaskWrapper } from 'listr2';
import type { EngineEvent, TaskEndStatus } from '../events.js';
import { formatDuration, formatProgress, summaryLines } from './format.js';
import { criticalPathLine } from './critical-path.js';
import type { Reporter } from './reporter.js';

interface Pending {
  resolve(status: TaskEndStatus, note?: string): void;
  reject(message: string): void;
  task?: ListrTaskWrapper<unknown, any, any>;
  title: string;
}

const waitTitle = (title: string, holder: string) => `${title} (waiting for ${holder} to finish this entry)`;

/** A listr2 tree on a terminal: one line per task, the live log or download line under it. */
export function createTtyReporter(write: (text: string) => void = (t) => process.stdout.write(t)): Reporter {
  const tasks = new Map<string, Pending>();
  // A task may end before listr2 has called its function: remember the ending and settle it then.
  const endings = new Map<string, Extract<EngineEvent, { type: 'task:end' }>>();
  // likewise a wait for another process's lock, which is told right at the start of the run
  const waits = new Map<string, string>();
  let done: Promise<unknown> = Promise.resolve();
  let summary: string[] = [];

  const listen = (e: EngineEvent) => {
    switch (e.type) {
      case 'run:start': {
        const list = new Listr(
          e.tasks
            .filter((t) => t.status !== 'skip')
            .map((t) => ({
              title: `${t.id}  ${t.title}`,
              task: (_: unknown, task: ListrTaskWrapper<unknown, any, any>) =>
                new Promise<void>((resolve, reject) => {
                  let settled = false;
                  const pending: Pending = {
                    title: `${t.id}  ${t.title}`,
                    task,
                    resolve: (status, note) => {
                      if (settled) return;
                      settled = true;
                      if (status === 'succeeded') task.title = `${pending.title} (${note})`;
                      else task.skip(`${t.id}  ${status}${note ? `: ${note}` : ''}`);
                      resolve();
                    },
                    reject: (message) => {
                      if (settled) return;
                      settled = true;
                      reject(new Error(message));
                    },
                  };
                  tasks.set(t.id, pending);
                  const ended = endings.get(t.id);
                  if (t.status === 'cached') pending.resolve('cached');
                  else if (ended) settle(pending, ended);
                  else task.title = waits.has(t.id) ? waitTitle(pending.title, waits.get(t.id)!) : `${pending.title} (waiting)`;
                }),
            })),
          { concurrent: true, exitOnError: false, rendererOptions: { collapseSkips: true, collapseErrors: false, showErrorMessage: true } },
        );
        done = list.run().catch(() => undefined);
        break;
      }
      case 'task:start':
        withTask(e.id, (p) => (p.task!.title = p.title));
        break;
      case 'task:wait':
        waits.set(e.id, e.holder);
        withTask(e.id, (p) => (p.task!.title = waitTitle(p.title, e.holder)));
        break;
      case 'task:progress':
        withTask(e.id, (p) => (p.task!.output = formatProgress(e.label, e.done, e.total)));
        break;
      case 'task:log':
        withTask(e.id, (p) => (p.task!.output = e.line.slice(0, 160)));
        break;
      case 'task:end':
        endings.set(e.id, e);
        withTask(e.id, (p) => settle(p, e));
        break;
      case 'run:end':
        summary = [...summaryLines(e.results, e.status, e.durationMs), `  ${criticalPathLine(e.criticalPath, e.durationMs, formatDuration)}`];
        break;
    }
  };

  const settle = (p: Pending, e: Extract<EngineEvent, { type: 'task:end' }>) => {
    // every ending settles the line, `cached` too: a task another process built while this one
    // waited for its lock ends as cached, and an unsettled line would keep listr2 running forever
    if (e.status === 'failed') p.reject(`${p.title}: ${e.error?.code}: ${e.error?.message}`);
    else p.resolve(e.status, e.status === 'succeeded' ? formatDuration(e.durationMs) : (e.error?.message ?? e.note));
  };

  const withTask = (id: string, fn: (p: Pending) => void) => {
    const p = tasks.get(id);
    if (p?.task) fn(p);
  };

  return {
    listen,
    async close() {
      await done;
      if (summary.length) write(`${summary.join('\n')}\n`);
    },
  };
}
