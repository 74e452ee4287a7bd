import { execFileSync } from 'node:child_process';
import { copyFileSync, mkdirSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { openChroot } from '../../src/sys/chroot.js';
import { mountsUnder } from '../../src/sys/mounts.js';
import { TaskLog } from '../../src/sys/task-log.js';
import { execGraph, harness, start, testDir } from '../helpers.js';

/** A tiny root: a static busybox and its sleep applet — enough to chroot into. */
function miniRoot(dir: string): string {
  const root = join(dir, 'root');
  mkdirSync(join(root, 'bin'), { recursive: true });
  copyFileSync('/bin/busybox', join(root, 'bin/busybox'));
  symlinkSync('busybox', join(root, 'bin/sleep'));
  return root;
}

const dirs: string[] = [];
afterEach(() => {
  // whatever a test did, leave nothing mounted behind
  for (const d of dirs.splice(0)) for (const m of mountsUnder(d)) execFileSync('umount', ['-l', m]);
});

async function mounted(root: string, count: number): Promise<void> {
  for (let i = 0; i < 200 && mountsUnder(root).length < count; i++) await new Promise((r) => setTimeout(r, 50));
}

describe('chroot session under signals', () => {
  const cases: [string, 'SIGINT' | 'SIGTERM', number][] = [
    ['SIGINT while mounting', 'SIGINT', 1],
    ['SIGINT inside the chroot', 'SIGINT', 5],
    ['SIGTERM while mounting', 'SIGTERM', 2],
    ['SIGTERM inside the chroot', 'SIGTERM', 5],
  ];
  it.each(cases)('%s leaves nothing mounted and exits 130', async (_, sig, after) => {
    const dir = testDir();
    dirs.push(dir);
    const root = miniRoot(dir);
    const p = start(harness, ['build', ...execGraph(dir, [{ id: 'enter', chroot: root, seconds: 30 }])]);
    await p.waitFor(/start {2}enter/);
    await mounted(root, after);
    p.child.kill(sig);
    const r = await p.done;
    expect(r.code, r.stderr).toBe(130);
    expect(mountsUnder(root)).toEqual([]);
    expect(readFileSync(join(dir, 'out/demo/logs/enter.log'), 'utf8')).toContain('mount -t sysfs');
  });

  it('after SIGKILL the next run finds the stale mounts, removes them and says so', async () => {
    const dir = testDir();
    dirs.push(dir);
    const root = miniRoot(dir);
    const args = execGraph(dir, [{ id: 'enter', chroot: root, seconds: 30 }]);
    const p = start(harness, ['build', ...args]);
    await p.waitFor(/start {2}enter/);
    await mounted(root, 5);
    p.child.kill('SIGKILL');
    await p.done;
    expect(mountsUnder(root).length).toBe(5);
    const next = start(harness, ['build', ...execGraph(dir, [{ id: 'other', script: 'true' }])]);
    const r = await next.done;
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toMatch(/removed 5 stale mount\(s\) left by a killed gpu-guest:\n {2}.*\/root\/dev\/pts \(left by process \d+\)/);
    expect(mountsUnder(root)).toEqual([]);
  });
});

describe('chroot session failures', () => {
  const ctx = (dir: string) => ({ log: new TaskLog(join(dir, 'task.log')), cacheDir: join(dir, 'cache'), signal: new AbortController().signal });

  it('refuses to enter a root that already has something mounted below it (E_MOUNT_LEAK)', async () => {
    const dir = testDir();
    dirs.push(dir);
    const root = miniRoot(dir);
    mkdirSync(join(root, 'mnt'));
    execFileSync('mount', ['-t', 'tmpfs', 'tmpfs', join(root, 'mnt')]);
    await expect(openChroot(root, ctx(dir))).rejects.toMatchObject({ code: 'E_MOUNT_LEAK', message: expect.stringContaining('something is already mounted below it'), details: [join(root, 'mnt')] });
  });

  it('a mount that fails half-way keeps its own error and leaves nothing mounted', async () => {
    const dir = testDir();
    dirs.push(dir);
    const root = miniRoot(dir);
    // a `mount` first on PATH that refuses the read-only remount of the /dev bind, as a hardened host might
    const bin = join(dir, 'bin');
    mkdirSync(bin);
    writeFileSync(join(bin, 'mount'), '#!/bin/sh\ncase "$*" in *remount*) echo "mount: permission denied (test)" >&2; exit 32;; esac\nexec /bin/mount "$@"\n', { mode: 0o755 });
    const path = process.env.PATH;
    process.env.PATH = `${bin}:${path}`;
    try {
      const err = await openChroot(root, ctx(dir)).catch((e) => e);
      expect(err.code).toBe('E_COMMAND_FAILED');
      expect(err.message).toMatch(/^mount -o remount,bind,ro .*\/dev exited with status 32/);
    } finally {
      process.env.PATH = path;
    }
    expect(mountsUnder(root)).toEqual([]);
  });

  it('a mount table that cannot be read fails closed (E_MOUNTINFO), never "nothing mounted"', () => {
    expect(() => mountsUnder('/tmp', '/nonexistent/mountinfo')).toThrow(expect.objectContaining({ code: 'E_MOUNTINFO', message: expect.stringContaining('nothing was deleted') }));
  });
});
