import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { LocalCacheStore } from '../../src/engine/cache.js';
import { DigestMemo } from '../../src/engine/digest.js';
import { planRun } from '../../src/engine/plan.js';
import type { TaskGraph } from '../../src/model/task.js';
import { createStepRegistry } from '../../src/model/step.js';
import { testDir } from '../helpers.js';

const steps = createStepRegistry([{ kind: 'x', version: 1, resources: { cpu: 1 }, run: async () => ({}) }]);

function setup() {
  const dir = testDir();
  const store = LocalCacheStore.open(join(dir, 'cache'));
  const fragment = join(dir, 'frag.conf');
  writeFileSync(fragment, 'CONFIG_A=y\n');
  const graph = (version: string): TaskGraph => ({
    pipeline: 'p',
    tasks: [
      { id: 'a', kind: 'x', upstream: {}, params: { version }, files: { fragment }, title: 'a' },
      { id: 'b', kind: 'x', upstream: { input: 'a' }, params: {}, files: {}, title: 'b' },
      { id: 'c', kind: 'x', upstream: {}, params: {}, files: {}, title: 'c' },
    ],
  });
  const plan = (g: TaskGraph, sel = {}) => planRun(g, sel, { steps, store, memo: new DigestMemo(), signal: new AbortController().signal, network: true });
  /** Pretends every planned task ran: commits an empty entry for it. */
  const commitAll = async (p: Awaited<ReturnType<typeof plan>>) => {
    for (const t of p.tasks) {
      const s = await store.begin(t.key);
      await store.commit(s, { key: t.key, task: t.id, kind: t.kind, pipeline: 'p', material: p.materials.get(t.id)!, result: {}, outputs: {}, durationMs: 0 });
      store.rememberMaterial('p', t.id, p.materials.get(t.id)!);
    }
  };
  return { graph, plan, commitAll, fragment };
}

const summary = (p: { tasks: { id: string; status: string; reasons: string[] }[] }) => Object.fromEntries(p.tasks.map((t) => [t.id, [t.status, ...t.reasons]]));

describe('planRun', () => {
  it('says why each task must run: new, changed parameter, changed input file, changed upstream, forced', async () => {
    const { graph, plan, commitAll, fragment } = setup();
    const first = await plan(graph('1'));
    expect(summary(first)).toEqual({ a: ['run', 'not built before'], b: ['run', 'not built before'], c: ['run', 'not built before'] });
    await commitAll(first);
    expect(summary(await plan(graph('1')))).toEqual({ a: ['cached'], b: ['cached'], c: ['cached'] });
    expect(summary(await plan(graph('2')))).toEqual({ a: ['run', 'parameter version changed'], b: ['run', 'upstream a changed'], c: ['cached'] });
    writeFileSync(fragment, 'CONFIG_A=m\n');
    expect(summary(await plan(graph('1')))).toEqual({ a: ['run', 'input file fragment changed'], b: ['run', 'upstream a changed'], c: ['cached'] });
    writeFileSync(fragment, 'CONFIG_A=y\n');
    expect(summary(await plan(graph('1'), { force: ['a'] }))).toEqual({ a: ['run', 'forced'], b: ['run', 'forced (depends on a forced task)'], c: ['cached'] });
  });

  it('selects with --until and --only', async () => {
    const { graph, plan, commitAll } = setup();
    const until = await plan(graph('1'), { until: 'a' });
    expect(summary(until)).toEqual({ a: ['run', 'not built before'], b: ['skip', 'after --until a'], c: ['skip', 'after --until a'] });
    await expect(plan(graph('1'), { only: 'b' })).rejects.toMatchObject({ code: 'E_NOT_CACHED' });
    await commitAll(await plan(graph('1')));
    const only = await plan(graph('1'), { only: 'b', force: ['b'] });
    expect(only.tasks.find((t) => t.id === 'b')!.status).toBe('run');
    expect(only.tasks.find((t) => t.id === 'a')!.status).toBe('skip');
    await expect(plan(graph('1'), { until: 'zz' })).rejects.toMatchObject({ code: 'E_UNKNOWN_TASK' });
  });

  it('--only resolves the tasks it reads with the network, as a build would; tasks it does not read resolve without', async () => {
    // a CI node runs `build --only T` on an empty local cache: T's inputs need their resolved keys
    const networkSeen: Record<string, boolean> = {};
    const resolving = createStepRegistry([
      { kind: 'x', version: 1, resources: { cpu: 1 }, run: async () => ({}), resolve: async (p, _f, ctx) => ((networkSeen[String(p.id)] = ctx.network), p) },
    ]);
    const store = LocalCacheStore.open(join(testDir(), 'cache'));
    const graph: TaskGraph = {
      pipeline: 'p',
      tasks: ['a', 'b', 'c'].map((id) => ({ id, kind: 'x', upstream: (id === 'b' ? { input: 'a' } : {}) as Record<string, string>, params: { id }, files: {}, title: id })),
    };
    const ctx = { steps: resolving, store, memo: new DigestMemo(), signal: new AbortController().signal, network: true };
    await expect(planRun(graph, { only: 'b' }, ctx)).rejects.toMatchObject({ code: 'E_NOT_CACHED' });
    expect(networkSeen).toEqual({ a: true, b: true, c: false });
    await planRun(graph, { until: 'a' }, ctx);
    expect(networkSeen).toEqual({ a: true, b: false, c: false });
  });
});
