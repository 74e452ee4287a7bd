import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { buildDriverRun } from '../fixtures/driver.js';
import { repoRoot, testDir } from '../helpers.js';

const entrypoint = join(repoRoot, 'vgpu-manager/nvidia-driver');

/** Stand-ins for the node's tools, each recording its call; the daemons really run until killed. */
function stubs(dir: string, calls: string): string {
  const bin = join(dir, 'bin');
  mkdirSync(bin);
  const stub = (name: string, body: string) => {
    writeFileSync(join(bin, name), `#!/bin/sh\necho "${name} $*" >> ${calls}\n${body}\n`);
    chmodSync(join(bin, name), 0o755);
  };
  stub('modprobe', 'exit 0');
  stub('rmmod', 'exit 0');
  stub('nvidia-vgpud', 'exit 0');
  stub('nvidia-vgpu-mgr', 'trap "echo nvidia-vgpu-mgr stopped >> ' + calls + '; exit 0" TERM; while true; do sleep 1; done');
  return bin;
}

function runInit(env: NodeJS.ProcessEnv): { done: Promise<{ code: number | null; out: string }>; child: ReturnType<typeof spawn>; ready: Promise<void> } {
  const child = spawn('bash', [entrypoint, 'init'], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let resolveReady: () => void;
  const ready = new Promise<void>((r) => (resolveReady = r));
  const take = (d: Buffer) => {
    out += d.toString();
    if (out.includes('nvidia-driver: ready')) resolveReady();
  };
  child.stdout.on('data', take);
  child.stderr.on('data', take);
  const done = new Promise<{ code: number | null; out: string }>((r) => child.on('close', (code) => (resolveReady(), r({ code, out }))));
  return { done, child, ready };
}

describe('nvidia-driver entrypoint', () => {
  it('init installs the driver, loads the modules, starts the daemons, and cleans up on SIGTERM', async () => {
    const dir = testDir();
    const calls = join(dir, 'calls');
    const installer = `#!/bin/sh\necho "nvidia-installer $*" >> ${calls}\n`;
    const run = buildDriverRun(dir, '550.54.16', { suffix: '-vgpu-kvm', installer });
    const bin = stubs(dir, calls);
    const p = runInit({ PATH: `${bin}:/usr/bin:/bin`, DRIVER_VERSION: '550.54.16', RUN_FILE: run.file, KERNEL_VERSION: '6.8.0-generic' });
    await p.ready;
    // let the daemon stand-in get going before the stop request
    for (let i = 0; i < 100 && !(existsSync(calls) && readFileSync(calls, 'utf8').includes('nvidia-vgpu-mgr ')); i++) await new Promise((r) => setTimeout(r, 50));
    p.child.kill('SIGTERM');
    const r = await p.done;
    expect(r.code, r.out).toBe(0);
    const log = readFileSync(calls, 'utf8').trim().split('\n');
    expect(log[0]).toMatch(/^nvidia-installer .*--kernel-name=6\.8\.0-generic --ui=none --no-questions --no-systemd/);
    expect(log).toEqual(expect.arrayContaining(['modprobe nvidia', 'modprobe nvidia_vgpu_vfio', 'nvidia-vgpud ', 'nvidia-vgpu-mgr ', 'nvidia-vgpu-mgr stopped', 'rmmod nvidia_vgpu_vfio', 'rmmod nvidia']));
    expect(log.indexOf('rmmod nvidia_vgpu_vfio')).toBeLessThan(log.indexOf('rmmod nvidia'));
  });

  it('fails with a clear message when the installer fails, and when the .run is missing', async () => {
    const dir = testDir();
    const calls = join(dir, 'calls');
    const run = buildDriverRun(dir, '550.54.16', { suffix: '-vgpu-kvm', installer: '#!/bin/sh\nexit 1\n' });
    const bin = stubs(dir, calls);
    const failed = await runInit({ PATH: `${bin}:/usr/bin:/bin`, DRIVER_VERSION: '550.54.16', RUN_FILE: run.file }).done;
    expect(failed.code).toBe(1);
    expect(failed.out).toContain('nvidia-driver: error: the driver installer failed');
    const missing = await runInit({ PATH: `${bin}:/usr/bin:/bin`, DRIVER_VERSION: '550.54.16', RUN_FILE: join(dir, 'nope.run') }).done;
    expect(missing.code).toBe(1);
    expect(missing.out).toContain('nope.run is missing from the image');
  });
});
