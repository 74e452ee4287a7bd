import { GuestError } from '../model/errors.js';
import { taskDeps, type TaskGraph, type TaskSpec } from '../model/task.js';

/** Tasks in an order where every task comes after its dependencies; a cycle is an error naming its path. */
export function topoOrder(graph: TaskGraph): TaskSpec[] {
  const byId = indexTasks(graph);
  const state = new Map<string, 'visiting' | 'done'>();
  const order: TaskSpec[] = [];
  const stack: string[] = [];
  const visit = (id: string): void => {
    const mark = state.get(id);
    if (mark === 'done') return;
    if (mark === 'visiting') {
      const cycle = [...stack.slice(stack.indexOf(id)), id];
      throw new GuestError('E_CYCLE', `task graph of ${graph.pipeline} has a cycle: ${cycle.join(' → ')} (remove one of these dependencies)`);
    }
    state.set(id, 'visiting');
    stack.push(id);
    for (const dep of taskDeps(byId.get(id)!)) visit(dep);
    stack.pop();
    state.set(id, 'done');
    order.push(byId.get(id)!);
  };
  for (const t of graph.tasks) visit(t.id);
  return order;
}

export function indexTasks(graph: TaskGraph): Map<string, TaskSpec> {
  const byId = new Map<string, TaskSpec>();
  for (const t of graph.tasks) {
    if (byId.has(t.id)) throw new GuestError('E_CYCLE', `task graph of ${graph.pipeline}: task id ${t.id} appears twice`);
    byId.set(t.id, t);
  }
  for (const t of graph.tasks) {
    for (const dep of taskDeps(t)) {
      if (!byId.has(dep)) throw new GuestError('E_UNKNOWN_TASK', `task ${t.id} depends on ${dep}, which is not in the graph of ${graph.pipeline}`);
    }
  }
  return byId;
}

/** A task id named on the command line must exist. */
export function requireTask(graph: TaskGraph, id: string, flag: string): void {
  if (!graph.tasks.some((t) => t.id === id)) {
    throw new GuestError('E_UNKNOWN_TASK', `${flag} ${id}: no such task in ${graph.pipeline} (tasks: ${graph.tasks.map((t) => t.id).join(', ')})`);
  }
}

/** The task and everything it depends on, transitively. */
export function ancestorsOf(graph: TaskGraph, id: string): Set<string> {
  const byId = indexTasks(graph);
  const seen = new Set<string>();
  const walk = (t: string): void => {
    if (seen.has(t)) return;
    seen.add(t);
    for (const d of taskDeps(byId.get(t)!)) walk(d);
  };
  walk(id);
  return seen;
}

/** The task and everything that depends on it, transitively. */
export function descendantsOf(graph: TaskGraph, id: string): Set<string> {
  const seen = new Set<string>([id]);
  let grew = true;
  while (grew) {
    grew = false;
    for (const t of graph.tasks) {
      if (!seen.has(t.id) && taskDeps(t).some((d) => seen.has(d))) {
        seen.add(t.id);
        grew = true;
      }
    }
  }
  return seen;
}
