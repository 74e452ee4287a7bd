import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { execGraph, harness, run, testDir, type ExecTask } from '../helpers.js';

/**
 * Early cutoff through the real CLI: `b` is keyed by what `a` made (its files), `c` by b's key.
 * A change to `a` that makes the same files reruns only `a`; one that makes other files reruns all.
 */
describe('early cutoff', () => {
  const graph = (aScript: string): ExecTask[] => [
    { id: 'a', script: aScript },
    { id: 'b', deps: ['a'], cutoff: true, script: 'cat "$UP_a/made" > copy' },
    { id: 'c', deps: ['b'], script: 'cat "$UP_b/copy" > final' },
  ];

  it('reruns only the task whose input changed when it makes the same output, and everything below when not', async () => {
    const dir = testDir();
    const args = (script: string) => execGraph(dir, graph(script));
    const first = await run(harness, ['build', ...args('echo one > made # first')]);
    expect(first.code, first.stderr).toBe(0);
    expect(first.stdout).toMatch(/succeeded b/);

    // the same file from another script: the plan says b waits for a, the build keeps b and c
    const plan = await run(harness, ['plan', ...args('printf "one\\n" > made # second')]);
    expect(plan.stdout).toMatch(/^run {4}b {14}after a {6}/m);
    expect(plan.stdout).toContain('why: a runs first: cached if what it makes comes out the same');
    expect(plan.stdout).toMatch(/^run {4}c {14}after a {6}/m);
    const same = await run(harness, ['build', ...args('printf "one\\n" > made # second')]);
    expect(same.code, same.stderr).toBe(0);
    expect(same.stdout).toMatch(/succeeded a/);
    expect(same.stdout).toMatch(/cached b: what a made is unchanged/);
    expect(same.stdout).toMatch(/cached c/);
    // and a plan after it knows every key again
    expect((await run(harness, ['plan', ...args('printf "one\\n" > made # second')])).stdout).toMatch(/0 to run, 3 cached/);

    // another file: b and c run
    const other = await run(harness, ['build', ...args('echo two > made')]);
    expect(other.code, other.stderr).toBe(0);
    expect(other.stdout).toMatch(/succeeded b/);
    expect(other.stdout).toMatch(/succeeded c/);
    expect(readFileSync(join(dir, 'out/demo/exec/final'), 'utf8')).toBe('two\n');
  });

  it('--force still reruns everything below the forced task, whatever it makes', async () => {
    const dir = testDir();
    const args = execGraph(dir, graph('echo one > made'));
    expect((await run(harness, ['build', ...args])).code).toBe(0);
    const forced = await run(harness, ['build', ...args, '--force', 'a']);
    expect(forced.code, forced.stderr).toBe(0);
    expect(forced.stdout).toMatch(/succeeded a/);
    // --force reruns the task and what depends on it: b and c run too
    expect(forced.stdout).toMatch(/succeeded b/);
  });
});
