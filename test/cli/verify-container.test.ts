import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { CONTAINER_CHECKS, CONTAINER_NEEDS, containerChecks, containerChecksNotRun, toolkitCheck, missingContainerOptions, vsockCheck } from '../../src/cli/verify-container.js';
import { containerSpec, findVirtiofsd, prepareContainerShare, startVirtiofsd } from '../../src/cli/verify-share.js';
import { verifyInit } from '../../src/cli/verify-init.js';
import { parseDotConfig } from '../../src/sys/kconfig/options.js';
import { CDI_UNIT_PATH, HOOK_PATH } from '../../src/steps/nvidia/toolkit.js';
import { buildToolkitDebs } from '../fixtures/toolkit.js';
import { testDir } from '../helpers.js';

const fullConfig = CONTAINER_NEEDS.map((o) => `CONFIG_${o}=y`).join('\n');
const parsed = (text: string) => parseDotConfig(text);

describe('verify: the container checks, host side', () => {
  it('names the options a kernel lacks to run containers the way Kata does', () => {
    expect(missingContainerOptions(parsed(fullConfig))).toEqual([]);
    const config = fullConfig.replace('CONFIG_OVERLAY_FS=y', '# CONFIG_OVERLAY_FS is not set').replace('CONFIG_USER_NS=y\n', '');
    expect(missingContainerOptions(parsed(config))).toEqual(['CONFIG_OVERLAY_FS', 'CONFIG_USER_NS']);
    expect(missingContainerOptions(parsed('CONFIG_OVERLAY_FS=m'))).toContain('CONFIG_OVERLAY_FS');
  });

  it('a kernel without them: skipped on the minimal profile, failed on any other, the options named', () => {
    const minimal = containerChecksNotRun([...CONTAINER_CHECKS, ...toolkitCheck(undefined)], ['CONFIG_OVERLAY_FS'], true);
    expect(minimal.map((r) => r.name)).toEqual(['share-9p', 'share-virtiofs', 'erofs-mount', 'overlay-mount', 'cgroup2', 'container-run', 'container-namespaces', 'container-cgroup-limits', 'container-seccomp']);
    expect(minimal[0]).toEqual({ name: 'share-9p', pass: true, skipped: true, detail: 'the kernel lacks CONFIG_OVERLAY_FS (kernel.profile: minimal; the kata profile runs containers)' });
    const own = containerChecksNotRun([...CONTAINER_CHECKS, ...toolkitCheck('oci-hook')], ['CONFIG_OVERLAY_FS', 'CONFIG_USER_NS'], false);
    expect(toolkitCheck('cdi')).toEqual(['cdi-spec']);
    expect(own.at(-1)).toEqual({ name: 'oci-hook-chain', pass: false, detail: 'the kernel lacks CONFIG_OVERLAY_FS, CONFIG_USER_NS: Kata cannot share or run a container in this guest (use kernel.profile: kata, or add them to a fragment)' });
  });

  it.runIf(findVirtiofsd())('serves a folder over virtio-fs while a boot needs it, and says so when virtiofsd cannot start', async () => {
    const dir = testDir();
    const daemon = await startVirtiofsd(findVirtiofsd()!, dir, join(dir, 'vfs.sock'), join(dir, 'virtiofsd.log'));
    expect(existsSync(join(dir, 'vfs.sock'))).toBe(true);
    daemon.stop();
    const err = await startVirtiofsd(findVirtiofsd()!, join(dir, 'no-such-folder'), join(dir, 'vfs2.sock'), join(dir, 'virtiofsd2.log')).catch((e: { code: string; message: string }) => e);
    expect(err).toMatchObject({ code: 'E_COMMAND_FAILED', message: expect.stringMatching(/exited \(\d+\) before it listened on .*vfs2\.sock: verify cannot share the container's files over virtio-fs/) });
  });

  it('vsock: skipped with the reason where the host or the kernel cannot, a check with a CID where both can', () => {
    expect(vsockCheck(parsed('CONFIG_VIRTIO_VSOCKETS=y'), false)).toEqual({ why: expect.stringContaining('no /dev/vhost-vsock') });
    expect(vsockCheck(parsed(''), true)).toEqual({ why: 'the kernel lacks CONFIG_VIRTIO_VSOCKETS' });
    const ok = vsockCheck(parsed('CONFIG_VIRTIO_VSOCKETS=y'), true);
    expect('cid' in ok && ok.cid >= 3 && ok.check.name === 'vsock').toBe(true);
  });

  it('the OCI spec puts the container in every namespace, under cgroup v2 limits and a seccomp filter, with the guest hook as Kata calls it', () => {
    const spec = containerSpec({ rootfs: '/run/gg-ctr/rootfs', hook: { path: HOOK_PATH }, gpu: true, id: 'gpu' }) as Record<string, any>;
    expect(spec.linux.namespaces.map((n: { type: string }) => n.type).sort()).toEqual(['cgroup', 'ipc', 'mount', 'network', 'pid', 'user', 'uts']);
    expect(spec.linux.resources).toMatchObject({ memory: { limit: 67108864 }, pids: { limit: 64 }, cpu: { quota: 50000, period: 100000 } });
    expect(spec.linux.seccomp.syscalls[0]).toMatchObject({ names: ['mkdir', 'mkdirat'], action: 'SCMP_ACT_ERRNO', errnoRet: 112 });
    expect(spec.hooks.prestart).toEqual([{ path: `/${HOOK_PATH}`, args: ['nvidia-container-toolkit.sh', 'prestart'] }]);
    expect(spec.process.env).toContain('NVIDIA_VISIBLE_DEVICES=all');
    const plain = containerSpec({ rootfs: 'rootfs', id: 'plain' }) as Record<string, any>;
    expect(plain.hooks).toBeUndefined();
    expect(plain.process.env).toEqual(['PATH=/bin']);
  });

  it('prepares a share whose runtime runs through its own loader, with an erofs layer and the bundles, and an init busybox can parse', async () => {
    const dir = testDir();
    const share = await prepareContainerShare(dir, { hook: { path: HOOK_PATH } }, new AbortController().signal);
    const rt = join(share.dir, 'runtime');
    // what the guest runs: the loader with the copied libraries, whatever libc the image has
    expect(execFileSync(join(rt, 'ld.so'), ['--library-path', join(rt, 'lib'), join(rt, 'crun'), '--version'], { encoding: 'utf8' })).toMatch(/^crun version \d/);
    expect(readFileSync(join(share.dir, 'MARKER'), 'utf8').trim()).toBe(share.marker);
    expect(readFileSync(join(share.dir, 'layer.erofs')).readUInt32LE(1024)).toBe(0xe0f5e1e2);
    expect(existsSync(join(share.dir, 'ctr/rootfs/bin/busybox')) && existsSync(join(share.dir, 'ctr/config-gpu.json'))).toBe(true);
    const init = join(dir, 'init');
    writeFileSync(init, verifyInit(containerChecks({ marker: share.marker, hook: { path: HOOK_PATH }, cdiUnit: CDI_UNIT_PATH, virtiofs: true }), 'ext4'));
    const parsed = spawnSync('/bin/busybox', ['sh', '-n', init], { encoding: 'utf8' });
    expect(parsed.stderr).toBe('');
    expect(parsed.status).toBe(0);
  });
});

describe('the toolkit fixture behaves as NVIDIA hook and CLI do in a VM without a GPU', () => {
  const hookRun = (env: string[]) => {
    const dir = testDir();
    buildToolkitDebs(dir, '1.17.3-1');
    const bin = join(dir, 'bin');
    mkdirSync(bin);
    execFileSync('cp', [join(dir, 'toolkit-src/libnvidia-container-tools/usr/bin/nvidia-container-cli'), bin]);
    const bundle = join(dir, 'bundle');
    mkdirSync(bundle);
    const spec = containerSpec({ rootfs: 'rootfs', id: 'x' }) as { process: { env: string[] } };
    spec.process.env.push(...env);
    writeFileSync(join(bundle, 'config.json'), JSON.stringify(spec, null, 2));
    const hook = join(dir, 'toolkit-src/nvidia-container-toolkit/usr/bin/nvidia-container-runtime-hook');
    return spawnSync('sh', [hook, '-debug', 'prestart'], { input: JSON.stringify({ ociVersion: '1.0.2', id: 'x', status: 'created', pid: 42, bundle }), encoding: 'utf8', env: { PATH: `${bin}:/usr/bin:/bin:/usr/sbin:/sbin` } });
  };

  it('a container asking for GPUs reaches nvidia-container-cli, which fails while no nvidia module is loaded', () => {
    const r = hookRun(['NVIDIA_VISIBLE_DEVICES=all']);
    expect(r.stderr.trim()).toBe('nvidia-container-cli: initialization error: nvml error: driver not loaded');
    expect(r.status).toBe(1);
  });

  it('nvidia-ctk cdi generate fails on NVML, naming what NVML lacks (here the library), and writes no spec', () => {
    const dir = testDir();
    buildToolkitDebs(dir, '1.17.3-1');
    const ctk = join(dir, 'toolkit-src/nvidia-container-toolkit-base/usr/bin/nvidia-ctk');
    const r = spawnSync('sh', [ctk, 'cdi', 'generate', `--output=${join(dir, 'nvidia.yaml')}`], { encoding: 'utf8' });
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/level=error msg="failed to generate CDI spec: failed to create device CDI specs: failed to initialize NVML: ERROR_LIBRARY_NOT_FOUND"$/m);
    expect(existsSync(join(dir, 'nvidia.yaml'))).toBe(false);
  });

  it('a container asking for none (or void) passes untouched', () => {
    for (const env of [[], ['NVIDIA_VISIBLE_DEVICES=void']]) {
      const r = hookRun(env);
      expect(r.stderr).toBe('');
      expect(r.status).toBe(0);
    }
  });
});
