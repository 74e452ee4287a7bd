import { mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { execGraph, fileAppears, harness, start, testDir } from '../helpers.js';

/** Host pids of the processes whose command line holds the token. */
function processesWith(token: string): number[] {
  const pids: number[] = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name) || Number(name) === process.pid) continue;
    try {
      if (readFileSync(`/proc/${name}/cmdline`, 'utf8').includes(token)) pids.push(Number(name));
    } catch {
      // gone meanwhile
    }
  }
  return pids;
}

async function gone(token: string, timeoutMs: number): Promise<number[]> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const left = processesWith(token);
    if (left.length === 0 || Date.now() > until) return left;
    await new Promise((r) => setTimeout(r, 50));
  }
}

describe('kernel makes die with gpu-guest', () => {
  it('SIGKILL of gpu-guest mid-make kills make and everything it started (its own PID namespace)', async () => {
    const dir = testDir();
    const tree = join(dir, 'tree');
    mkdirSync(tree);
    const token = String(100000 + Math.floor(Math.random() * 899999));
    const started = join(dir, 'started');
    // a recipe that outlives make unless something kills it: a shell with a long sleep (unique in its arguments)
    writeFileSync(join(tree, 'Makefile'), `all-${token}:\n\ttouch ${started}; sleep 300.${token}; echo never\n`);
    const p = start(harness, ['build', ...execGraph(dir, [{ id: 'kernel', make: { tree, target: `all-${token}` } }])]);
    try {
      await fileAppears(started, 30_000);
      // make, the recipe's shell and its sleep are running
      expect(processesWith(`300.${token}`).length).toBeGreaterThanOrEqual(2);
      p.child.kill('SIGKILL');
      await p.done;
      expect(await gone(token, 10_000)).toEqual([]);
    } finally {
      for (const pid of processesWith(token)) {
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          // already gone
        }
      }
    }
  });
});
