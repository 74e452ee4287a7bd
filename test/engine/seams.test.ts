import { execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { mountsUnder } from '../../src/sys/mounts.js';
import { cliBin, execGraph, fileAppears, harness, run, start, testDir, writePipeline } from '../helpers.js';

const jsonEvents = (stdout: string) => stdout.trim().split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l));

describe('errors from steps and the engine', () => {
  it('a step rejecting its input (E_PIPELINE_INVALID) exits 2 at run time, as at plan time', async () => {
    const dir = testDir();
    const r = await run(harness, ['build', ...execGraph(dir, [{ id: 'check', throw: { code: 'E_PIPELINE_INVALID', message: 'toolkit: give toolkit.debs' } }])]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/^error: E_PIPELINE_INVALID: toolkit: give toolkit\.debs/m);
  });

  it('a bug inside a step (not a GuestError) is E_STEP_FAILED with one clean line, and its dependants are E_UPSTREAM_FAILED', async () => {
    const dir = testDir();
    const r = await run(harness, ['build', '--json', ...execGraph(dir, [{ id: 'buggy', crash: 'result.repository is undefined' }, { id: 'after', deps: ['buggy'], script: 'true' }])]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^error: E_STEP_FAILED: buggy: result\.repository is undefined/m);
    expect(r.stderr).not.toMatch(/\n\s+at /);
    const skipped = jsonEvents(r.stdout).find((e) => e.type === 'task:end' && e.id === 'after');
    expect(skipped).toMatchObject({ status: 'skipped', error: { code: 'E_UPSTREAM_FAILED', message: 'not run: buggy did not succeed' } });
  });

  it('a task that runs out of disk space is E_DISK_FULL, with the cache\'s free space and how to free some', async () => {
    const dir = testDir();
    const tiny = join(dir, 'tiny');
    mkdirSync(tiny);
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=1m', 'gpu-guest-test-tiny', tiny]);
    try {
      // dd's own message from a real full file system
      const r = await run(harness, ['build', ...execGraph(dir, [{ id: 'fill', script: `dd if=/dev/zero of=${tiny}/blob bs=1M count=4` }])]);
      expect(r.code).toBe(1);
      expect(r.stderr).toMatch(/^error: E_DISK_FULL: fill: ran out of disk space \(No space left on device\); the cache .* has [\d.]+ GiB free: free some, e\.g\. gpu-guest cache prune --max-size <size> or --older-than 14d, and run again/m);
    } finally {
      execFileSync('umount', [tiny]);
    }
  });

  it('a task of a kind this gpu-guest lacks is E_UNKNOWN_STEP; a missing input file is E_INPUT_NOT_FOUND', async () => {
    const dir = testDir();
    const unknown = await run(harness, ['plan', ...execGraph(dir, [{ id: 'x', kind: 'kernel-magic', script: 'true' }])]);
    expect(unknown.code).toBe(2);
    expect(unknown.stderr).toMatch(/E_UNKNOWN_STEP: task x uses step kind kernel-magic, which this gpu-guest does not have/);
    const missing = await run(harness, ['plan', ...execGraph(dir, [{ id: 'y', script: 'true', files: { fragment: join(dir, 'gone.conf') } }])]);
    expect(missing.code).toBe(2);
    expect(missing.stderr).toMatch(/E_INPUT_NOT_FOUND: input .*gone\.conf does not exist/);
  });

  it('an unusable out folder is E_OUT_UNWRITABLE at once, and nothing is created', async () => {
    const dir = testDir();
    const begun = Date.now();
    const r = await run(harness, ['build', '--pipeline', execGraph(dir, [{ id: 'a', script: 'true' }])[1]!, '--cache-dir', join(dir, 'cache'), '--out-dir', '/proc/gpu-guest-test']);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/E_OUT_UNWRITABLE: output folder \/proc\/gpu-guest-test\/demo is not writable \(\/proc is on a kernel pseudo file system\)/);
    expect(Date.now() - begun).toBeLessThan(10_000);
  });

  it('a cache lock that cannot be taken (read-only locks folder) fails the task with E_CACHE_LOCK, not a silent cancel', async () => {
    const dir = testDir();
    const args = execGraph(dir, [{ id: 'a', script: 'true' }]);
    expect((await run(harness, ['plan', ...args])).code).toBe(0);
    const locks = join(dir, 'cache/locks');
    mkdirSync(locks, { recursive: true });
    // root ignores permissions: a read-only bind mount is what really refuses the lock file
    execFileSync('mount', ['--bind', locks, locks]);
    try {
      execFileSync('mount', ['-o', 'remount,bind,ro', locks]);
      const r = await run(harness, ['build', ...args]);
      expect(r.code).toBe(1);
      expect(r.stderr).toMatch(/^error: E_CACHE_LOCK: cannot take the cache lock .*\/locks\/[0-9a-f]{64}\.lock \(EROFS\)/m);
      expect(r.stdout).toMatch(/failed a/);
    } finally {
      execFileSync('umount', [locks]);
    }
    expect(mountsUnder(dir)).toEqual([]);
  });
});

describe('the terminal view', () => {
  it('settles a task that another process built while this one waited for the lock, and exits', async () => {
    const dir = testDir();
    const started = join(dir, 'started');
    const release = join(dir, 'release');
    const args = execGraph(dir, [{ id: 'shared', script: `touch ${started}; while [ ! -f ${release} ]; do sleep 0.05; done; echo done > out.txt` }]);
    const holder = start(harness, ['build', ...args]);
    await fileAppears(started);
    const cmd = [process.execPath, harness, 'build', ...args].map((a) => `'${a}'`).join(' ');
    const tty = spawn('script', ['-qec', `stty cols 120 rows 40; ${cmd}`, '/dev/null'], { env: { ...process.env, CI: '', TERM: 'xterm' } });
    let screen = '';
    tty.stdout.on('data', (d: Buffer) => (screen += d.toString()));
    const closed = new Promise<number | null>((r) => tty.on('close', r));
    const timer = setTimeout(() => tty.kill('SIGKILL'), 60_000);
    let code: number | null;
    try {
      // the terminal run is waiting for the holder's lock before the holder may finish
      for (let i = 0; !/waiting for process/.test(screen); i++) {
        if (i > 1500) throw new Error(`the terminal run never waited:\n${screen.slice(-2000)}`);
        await new Promise((r) => setTimeout(r, 20));
      }
      writeFileSync(release, '');
      expect((await holder.done).code).toBe(0);
      code = await closed;
    } finally {
      // whatever happened, neither process outlives the test
      writeFileSync(release, '');
      clearTimeout(timer);
      holder.child.kill('SIGKILL');
      tty.kill('SIGKILL');
    }
    expect(code, screen).toBe(0);
    expect(screen.replace(/\x1b\[[0-9;?]*[A-Za-z]/g, '')).toMatch(/shared +cached/);
  });
});

describe('plan never changes the host', () => {
  it('leaves stale mounts, scratch folders of dead processes and the cache untouched, and contacts no mirror', async () => {
    const dir = testDir();
    const cache = join(dir, 'cache');
    // a scratch folder and a chroot-session record of a process that is gone
    const dead = 999_999_999;
    const scratch = join(cache, 'tmp', `abcdef0123456789.${dead}.00000000`);
    mkdirSync(join(scratch, 'work'), { recursive: true });
    const stale = join(dir, 'stale-root');
    mkdirSync(stale);
    execFileSync('mount', ['-t', 'tmpfs', 'tmpfs', stale]);
    let requests = 0;
    const mirror = createServer((_, res) => {
      requests++;
      res.writeHead(404).end();
    });
    await new Promise<void>((r) => mirror.listen(0, '127.0.0.1', r));
    try {
      mkdirSync(join(cache, 'chroot-sessions'), { recursive: true });
      writeFileSync(join(cache, 'chroot-sessions', `${dead}-1.json`), JSON.stringify({ pid: dead, root: stale, mounts: [stale] }));
      const before = readdirSync(cache).sort();
      const port = (mirror.address() as { port: number }).port;
      const file = writePipeline(dir, 'intel', `  version: "6.1"\n  source:\n    mirrors: [http://user:secret@127.0.0.1:${port}/pub]\n`);
      const r = await run(cliBin, ['plan', '--pipeline', file, '--cache-dir', cache]);
      expect(r.code, r.stderr).toBe(0);
      expect(r.stdout).toMatch(/resolved when the build runs \(plan does not contact mirrors\)/);
      expect(requests).toBe(0);
      expect(r.stdout).not.toContain('secret');
      expect(existsSync(scratch)).toBe(true);
      expect(mountsUnder(stale)).toEqual([stale]);
      expect(readdirSync(cache).sort()).toEqual(before);
    } finally {
      execFileSync('umount', [stale]);
      await new Promise((r) => mirror.close(r));
    }
  });
});

describe('credentials in a URL', () => {
  it('never reach plan output, the manifest, the events or the task logs', async () => {
    const dir = testDir();
    const out = join(dir, 'out');
    const mirror = 'http://builder:s3cr3t-pw@127.0.0.1:9/debian';
    const common = ['--vendor', 'intel', '--cache-dir', join(dir, 'cache'), '--out-dir', out, '--set', `rootfs.mirror=${mirror}`];
    const plan = await run(cliBin, ['plan', '--json', ...common]);
    expect(plan.code, plan.stderr).toBe(0);
    expect(JSON.parse(plan.stdout).tasks.find((t: { id: string }) => t.id === 'rootfs').params.mirror).toBe('http://***@127.0.0.1:9/debian');
    const build = await run(cliBin, ['build', '--until', 'rootfs', '--json', ...common]);
    expect(build.code).toBe(1);
    // an unreachable mirror is said to be unreachable, not to lack the suite
    expect(build.stderr).toMatch(/the mirror http:\/\/\*\*\*@127\.0\.0\.1:9\/debian could not be reached \(.*(refused|connect).*\): check rootfs\.mirror and the network/i);
    // a task that succeeds with the URL in its parameters: its manifest entry, log and events
    const ok = await run(harness, ['build', '--json', ...execGraph(dir, [{ id: 'fetch', script: `echo ${mirror} > url.txt` }])]);
    expect(ok.code, ok.stderr).toBe(0);
    const texts = [plan.stdout, plan.stderr, build.stdout, build.stderr, ok.stdout, ok.stderr];
    const walk = (d: string): string[] => readdirSync(d, { withFileTypes: true }).flatMap((e) => (e.isDirectory() ? walk(join(d, e.name)) : [join(d, e.name)]));
    const files = walk(out).filter((f) => !f.endsWith('url.txt'));
    for (const f of files) texts.push(readFileSync(f, 'utf8'));
    expect(files.map((f) => f.slice(out.length))).toEqual(expect.arrayContaining(['/intel/logs/rootfs.log', '/intel/logs/events.jsonl', '/demo/manifest.json', '/demo/logs/fetch.log']));
    expect(readFileSync(join(out, 'intel/logs/rootfs.log'), 'utf8')).toContain('http://***@127.0.0.1:9/debian');
    expect(readFileSync(join(out, 'demo/manifest.json'), 'utf8')).toContain('http://***@127.0.0.1:9/debian');
    for (const t of texts) expect(t).not.toContain('s3cr3t-pw');
  }, 120_000);
});
