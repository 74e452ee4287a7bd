import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { execGraph, harness, run, testDir } from '../helpers.js';

describe('CI-friendly output', () => {
  it('on GitHub Actions: a log group per task that ran, an error annotation for a failure, a Markdown step summary; --summary writes JSON', async () => {
    const dir = testDir();
    const marker = join(dir, 'fixed');
    const args = execGraph(dir, [
      { id: 'a', script: 'echo hello > a.txt; echo "::set-output name=x::from a build log"' },
      { id: 'b', deps: ['a'], script: `echo compiling; test -f ${marker} || { echo 'cc1: error: broke, 100%' >&2; exit 3; }; echo b > b.txt` },
    ]);
    const stepSummary = join(dir, 'step-summary.md');
    const summary = join(dir, 'summary.json');
    const env = { GITHUB_ACTIONS: 'true', GITHUB_STEP_SUMMARY: stepSummary };
    const failed = await run(harness, ['build', ...args, '--summary', summary], { env });
    expect(failed.code).toBe(1);
    expect(failed.stdout).toMatch(/^::group::a: succeeded in \d+ ms$/m);
    // the task's own output cannot act as a workflow command: it sits between stop-commands markers
    const token = /^::stop-commands::([0-9a-f]{32})$/m.exec(failed.stdout)![1]!;
    const inA = failed.stdout.slice(failed.stdout.indexOf(`::stop-commands::${token}`), failed.stdout.indexOf(`::${token}::`));
    expect(inA).toContain('::set-output name=x::from a build log');
    expect(failed.stdout).toMatch(/^::group::b: failed in \d+ ms$/m);
    expect(failed.stdout).toContain('cc1: error: broke, 100%');
    // the message (% escaped as the runner expects) and the title naming the code and the task
    expect(failed.stdout).toMatch(/^::error title=E_COMMAND_FAILED in task b::sh -c .*broke, 100%25.* exited with status 3 \(see the task log\)$/m);
    expect(readFileSync(stepSummary, 'utf8')).toMatch(/^### gpu-guest: demo failed in [\d.]+ (ms|s)\n\n\*\*E_COMMAND_FAILED\*\* in task `b`: sh -c/);
    const first = JSON.parse(readFileSync(summary, 'utf8'));
    expect(first).toMatchObject({ pipeline: 'demo', status: 'failed', error: { task: 'b', code: 'E_COMMAND_FAILED' }, artifacts: [] });
    expect(first.tasks.map((t: { id: string; status: string }) => `${t.id} ${t.status}`)).toEqual(['a succeeded', 'b failed']);

    writeFileSync(marker, '');
    const fixed = await run(harness, ['build', ...args, '--summary', summary], { env });
    expect(fixed.code, fixed.stderr).toBe(0);
    // a cached task gets no group: it did nothing
    expect(fixed.stdout).not.toMatch(/^::group::a/m);
    expect(fixed.stdout).not.toMatch(/^::error/m);
    const second = JSON.parse(readFileSync(summary, 'utf8'));
    expect(second.tasks.map((t: { id: string; status: string }) => `${t.id} ${t.status}`)).toEqual(['a cached', 'b succeeded']);
    expect(second.tasks.every((t: { key: string }) => /^[0-9a-f]{64}$/.test(t.key))).toBe(true);
    // every artifact with the sha256 SHA256SUMS has for it
    const sums = readFileSync(join(dir, 'out/demo/SHA256SUMS'), 'utf8');
    expect(second.artifacts.map((x: { path: string }) => x.path).sort()).toEqual(['exec/a.txt', 'exec/b.txt']);
    for (const x of second.artifacts) expect(sums).toContain(`${x.sha256}  ${x.path}\n`);
    // the step summary is appended, one section per build
    expect(readFileSync(stepSummary, 'utf8').match(/^### gpu-guest: demo /gm)).toHaveLength(2);
    expect(readFileSync(stepSummary, 'utf8')).toMatch(/\| exec\/b\.txt \| 2 B \| `[0-9a-f]{16}…` \|/);
  });

  it('prints no workflow commands off GitHub Actions', async () => {
    const dir = testDir();
    const r = await run(harness, ['build', ...execGraph(dir, [{ id: 'a', script: 'echo hi' }])], { env: { GITHUB_ACTIONS: '' } });
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).not.toMatch(/^::/m);
  });

  it('refuses a --summary in a folder that does not exist before building anything (exit 2)', async () => {
    const dir = testDir();
    const r = await run(harness, ['build', ...execGraph(dir, [{ id: 'a', script: 'echo ran > a.txt' }]), '--summary', join(dir, 'nope/summary.json')]);
    expect(r.code).toBe(2);
    expect(r.stderr.trim()).toBe(`error: E_USAGE: --summary ${join(dir, 'nope/summary.json')}: folder ${join(dir, 'nope')} does not exist (create it, or name a file in an existing folder)`);
    expect(existsSync(join(dir, 'cache/entries'))).toBe(false);
  });
});
