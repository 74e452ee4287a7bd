import { describe, expect, it } from 'vitest';
import { Schedule, type Decision, type ScheduledTask } from '../../src/engine/schedule.js';
import type { TaskEndStatus } from '../../src/model/task.js';

const task = (id: string, deps: string[] = [], more: Partial<ScheduledTask> = {}): ScheduledTask => ({ id, deps, cpu: 1, start: 'run', hasEntry: false, ...more });
const started = (ds: Decision[]) => ds.filter((d) => d.type === 'start').map((d) => d.id);
const skipped = (ds: Decision[]) => ds.filter((d) => d.type === 'skip').map((d) => `${d.id}<-${(d as { because: string }).because}`);

/** Drives a schedule through a script of endings and records what it decided at each turn. */
function drive(tasks: ScheduledTask[], opts: { jobs?: number; keepGoing?: boolean }, endings: [string, TaskEndStatus][]): string[][] {
  const s = new Schedule(tasks, { jobs: opts.jobs ?? 99, keepGoing: opts.keepGoing ?? false });
  const turns: string[][] = [];
  const turn = () => {
    const ds = s.next();
    turns.push([...started(ds), ...skipped(ds).map((x) => `skip ${x}`)]);
  };
  turn();
  for (const [id, status] of endings) {
    s.finish(id, status, status === 'succeeded');
    turn();
  }
  return turns;
}

describe('Schedule (pure state machine)', () => {
  const cases: [string, ScheduledTask[], { jobs?: number; keepGoing?: boolean }, [string, TaskEndStatus][], string[][]][] = [
    ['a chain runs one after the other', [task('a'), task('b', ['a']), task('c', ['b'])], {}, [['a', 'succeeded'], ['b', 'succeeded'], ['c', 'succeeded']], [['a'], ['b'], ['c'], []]],
    ['independent tasks start together', [task('a'), task('b'), task('c', ['a', 'b'])], {}, [['a', 'succeeded'], ['b', 'succeeded'], ['c', 'succeeded']], [['a', 'b'], [], ['c'], []]],
    ['two cpu:all tasks never overlap, light ones do', [task('k1', [], { cpu: 'all' }), task('k2', [], { cpu: 'all' }), task('f')], {}, [['k1', 'succeeded'], ['f', 'succeeded'], ['k2', 'succeeded']], [['k1', 'f'], ['k2'], [], []]],
    ['--jobs 1 runs one at a time', [task('a'), task('b'), task('c')], { jobs: 1 }, [['a', 'succeeded'], ['b', 'succeeded'], ['c', 'succeeded']], [['a'], ['b'], ['c'], []]],
    ['a failure stops new starts and skips its dependants', [task('a'), task('b', ['a']), task('c')], { jobs: 1 }, [['a', 'failed']], [['a'], ['skip b<-a']]],
    ['--keep-going runs the other branches after a failure', [task('a'), task('b', ['a']), task('c')], { jobs: 1, keepGoing: true }, [['a', 'failed'], ['c', 'succeeded']], [['a'], ['c', 'skip b<-a'], []]],
    ['a skip cascades down the chain', [task('a'), task('b', ['a']), task('c', ['b'])], {}, [['a', 'cancelled']], [['a'], ['skip b<-a', 'skip c<-b']]],
    ['a cached input is ready at once', [task('a', [], { start: 'cached', hasEntry: true }), task('b', ['a'])], {}, [['b', 'succeeded']], [['b'], []]],
    ['an unselected input with an entry feeds --only', [task('a', [], { start: 'unselected', hasEntry: true }), task('b', ['a'])], {}, [['b', 'succeeded']], [['b'], []]],
    ['an unselected task never starts', [task('a'), task('b', ['a'], { start: 'unselected' })], {}, [['a', 'succeeded']], [['a'], []]],
  ];
  it.each(cases)('%s', (_, tasks, opts, endings, turns) => {
    expect(drive(tasks, opts, endings)).toEqual(turns);
  });

  it('after stop() starts nothing, and cancels what never started', () => {
    const s = new Schedule([task('a'), task('b', ['a']), task('c', [], { cpu: 'all' }), task('d', [], { cpu: 'all' })], { jobs: 99, keepGoing: false });
    expect(started(s.next())).toEqual(['a', 'c']);
    s.stop();
    s.finish('a', 'succeeded', true);
    expect(s.next()).toEqual([]);
    s.finish('c', 'succeeded', true);
    expect(s.cancelPending()).toEqual(['b', 'd']);
    expect(s.allSucceeded).toBe(false);
  });

  it('knows when every selected task succeeded', () => {
    const s = new Schedule([task('a'), task('b', [], { start: 'cached', hasEntry: true }), task('c', [], { start: 'unselected' })], { jobs: 99, keepGoing: false });
    s.next();
    expect(s.allSucceeded).toBe(false);
    s.finish('a', 'succeeded', true);
    expect(s.allSucceeded).toBe(true);
  });

  it('refuses an ending for a task it did not start', () => {
    const s = new Schedule([task('a')], { jobs: 99, keepGoing: false });
    expect(() => s.finish('a', 'succeeded', true)).toThrow(/a finished but was not running/);
  });
});
