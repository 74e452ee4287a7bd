import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { guestChecks, quote, verifyInit } from '../../src/cli/verify-init.js';
import { debugfsQuote } from '../../src/steps/image/image.js';
import { checkKernelRelease } from '../../src/steps/kernel/kernel-build.js';
import { expandFragments } from '../../src/sys/kconfig/fragments.js';
import { requireKernelPackage } from '../../src/steps/kernel/kernel-debs.js';
import { checkToolkitSet } from '../../src/steps/nvidia/toolkit.js';
import { parseLoadNames } from '../../src/steps/nvidia/driver-packages.js';
import { signModules } from '../../src/steps/nvidia/driver-tree.js';
import { explainPushFailure } from '../../src/sys/registry-push.js';
import { upstreamVersion } from '../../src/pipeline/load.js';
import { readSigningIdentity, signingFragment } from '../../src/sys/module-signing.js';
import { testSigningKey, TEST_SIGNER } from '../fixtures/signing.js';
import { readBaseImage } from '../../src/steps/vgpu/base-image.js';
import { ImageLayout } from '../../src/sys/oci.js';
import { TaskLog } from '../../src/sys/task-log.js';
import { repoRoot, suiteDir, testDir } from '../helpers.js';

const thrown = (fn: () => unknown) => {
  try {
    fn();
  } catch (err) {
    return err as { code: string; message: string };
  }
  throw new Error('expected a throw');
};

describe('the checks steps make on what they are given', () => {
  it('a kernel release without the pipeline suffix is E_KERNEL_RELEASE', () => {
    expect(() => checkKernelRelease('6.1.192-nvidia-gpu', '-nvidia-gpu')).not.toThrow();
    const err = thrown(() => checkKernelRelease('6.1.192', '-nvidia-gpu'));
    expect(err.code).toBe('E_KERNEL_RELEASE');
    expect(err.message).toContain("built kernel release '6.1.192' does not end in -nvidia-gpu");
  });

  it('packaging without the kernel image package is E_PACKAGE_MISSING, naming what was made', () => {
    expect(() => requireKernelPackage('deb', ['linux-image-6.1.1-x', 'linux-libc-dev'], '6.1.1-x')).not.toThrow();
    const err = thrown(() => requireKernelPackage('deb', ['linux-libc-dev'], '6.1.1-x'));
    expect(err.code).toBe('E_PACKAGE_MISSING');
    expect(err.message).toContain('bindeb-pkg produced no linux-image-6.1.1-x package (got: linux-libc-dev)');
    expect(thrown(() => requireKernelPackage('rpm', [], '6.1.1-x')).message).toContain('binrpm-pkg produced no kernel package (got: nothing)');
  });

  it('three of the four toolkit packages is E_TOOLKIT_INCOMPLETE, naming the missing one', () => {
    const debs = ['nvidia-container-toolkit', 'nvidia-container-toolkit-base', 'libnvidia-container1'].map((p) => ({ file: `${p}.deb`, package: p, version: '1.17.3-1' }));
    const err = thrown(() => checkToolkitSet(debs, '1.17.3-1'));
    expect(err.code).toBe('E_TOOLKIT_INCOMPLETE');
    expect(err.message).toBe('toolkit.debs lacks libnvidia-container-tools (all four toolkit packages are needed)');
  });

  it('a missing fragment or an empty fragment folder is E_FRAGMENT_NOT_FOUND', () => {
    const dir = testDir();
    expect(thrown(() => expandFragments([join(dir, 'nope.conf')]))).toMatchObject({ code: 'E_FRAGMENT_NOT_FOUND', message: expect.stringContaining('nope.conf does not exist') });
    mkdirSync(join(dir, 'empty'));
    expect(thrown(() => expandFragments([join(dir, 'empty')]))).toMatchObject({ code: 'E_FRAGMENT_NOT_FOUND', message: expect.stringContaining('holds no *.conf file') });
  });

  it('a base image that is no OCI layout is E_BASE_IMAGE', async () => {
    const dir = testDir();
    mkdirSync(join(dir, 'not-a-layout'));
    const log = new TaskLog(join(dir, 'log'));
    const ctx = { log, workDir: dir, signal: new AbortController().signal };
    await expect(readBaseImage(ctx, join(dir, 'not-a-layout'), new ImageLayout(join(dir, 'layout')))).rejects.toMatchObject({ code: 'E_BASE_IMAGE', message: expect.stringContaining('no oci-layout and index.json') });
    log.close();
  });
});

describe('renamed NVIDIA modules (Debian: nvidia-current*.ko behind modprobe install lines)', () => {
  // what `modprobe -c` prints in a rootfs with Debian's 535.261.03 packages and libcuda1
  const showconfig = [
    'install nvidia modprobe -i nvidia-current $CMDLINE_OPTS',
    'install nvidia_modeset modprobe nvidia ; modprobe -i nvidia-current-modeset $CMDLINE_OPTS',
    'install nvidia_uvm modprobe nvidia ; modprobe -i nvidia-current-uvm $CMDLINE_OPTS',
    'install dummy /bin/true',
    'remove nvidia modprobe -r -i nvidia-drm nvidia-modeset nvidia-peermem nvidia-uvm nvidia',
  ].join('\n');

  it('reads which file each name loads, the last -i of an install line, in dashes', () => {
    expect(parseLoadNames(showconfig)).toEqual({ 'nvidia-current': 'nvidia', 'nvidia-current-modeset': 'nvidia-modeset', 'nvidia-current-uvm': 'nvidia-uvm' });
  });

  it("checks a module's dependencies in modules.dep itself, every file it names present (kmod's --show-depends drops a missing one)", () => {
    const modules = ['kernel/drivers/video/nvidia.ko', 'kernel/drivers/video/nvidia-uvm.ko', 'kernel/drivers/video/nvidia-drm.ko'];
    const checks = guestChecks({ release: 'r1', options: [], modules, driverVersion: '535.261.03' }).filter((c) => c.name.startsWith('module-deps:'));
    const root = testDir();
    const dir = join(root, 'lib/modules/r1/kernel/drivers/video');
    mkdirSync(dir, { recursive: true });
    writeFileSync(join(root, 'lib/modules/r1/modules.dep'), 'kernel/drivers/video/nvidia.ko:\nkernel/drivers/video/nvidia-uvm.ko: kernel/drivers/video/nvidia.ko\n');
    for (const m of modules) writeFileSync(join(root, 'lib/modules/r1', m), '');
    // the checks read the guest's image at /mnt: here a folder stands for it
    const outcome = () => checks.map((c) => {
      const r = spawnSync('sh', ['-c', c.script.replaceAll('/mnt', root)], { encoding: 'utf8' });
      return `${c.name} ${r.status === 0 ? 'pass' : 'fail'} ${r.stdout.trim()}`;
    });
    expect(outcome()).toEqual([
      'module-deps:nvidia-uvm pass needs: kernel/drivers/video/nvidia.ko',
      'module-deps:nvidia-drm fail kernel/drivers/video/nvidia-drm.ko is not in modules.dep (run depmod r1)',
    ]);
    rmSync(join(dir, 'nvidia.ko'));
    expect(outcome()[0]).toBe('module-deps:nvidia-uvm fail missing: /lib/modules/r1/kernel/drivers/video/nvidia.ko');
  });

  it('verify loads the main module by the name modprobe knows and checks the others by their files', () => {
    const modules = ['updates/dkms/nvidia-current.ko', 'updates/dkms/nvidia-current-uvm.ko'];
    const checks = guestChecks({ release: '6.1.1-x', options: [], modules, loadNames: parseLoadNames(showconfig), driverVersion: '535.261.03' });
    const by = (name: string) => checks.find((c) => c.name === name)?.script ?? '';
    expect(by('module-loads:nvidia')).toContain("m='nvidia'");
    expect(by('module-loads:nvidia')).toContain("'^nvidia |^nvidia_current '");
    expect(by('module-deps:nvidia-uvm')).toContain("m='updates/dkms/nvidia-current-uvm.ko'");
    expect(by('driver-version')).toContain("modinfo -F version '/lib/modules/6.1.1-x/updates/dkms/nvidia-current.ko'");
    // enforcement is checked only when it was asked for, and only with signed modules
    expect(checks.some((c) => c.name === 'module-sig-enforced')).toBe(false);
    const enforced = guestChecks({ release: '6.1.1-x', options: [], modules, signer: 'gpu-guest test', driverVersion: '535.261.03', sigEnforced: true });
    expect(enforced.find((c) => c.name === 'module-sig-enforced')?.script).toContain('/sys/module/module/parameters/sig_enforce');
  });

  it('a Debian version without epoch and revision is the upstream version', () => {
    expect(upstreamVersion('535.261.03-1')).toBe('535.261.03');
    expect(upstreamVersion('1:535.261.03-1~deb12u1')).toBe('535.261.03');
    expect(upstreamVersion('550.127.05-0ubuntu1-1')).toBe('550.127.05-0ubuntu1');
  });
});

describe('kernel.moduleSigning: a key and its certificate, proven to belong together', () => {
  const dir = suiteDir();
  const good = testSigningKey(dir);
  const openssl = (...args: string[]) => execFileSync('openssl', args, { stdio: 'ignore' });

  it('reads the key type and the signer modinfo will show (the issuer CN)', () => {
    expect(readSigningIdentity(good.key, good.certificate)).toEqual({ keyType: 'rsa', signer: TEST_SIGNER });
    expect(signingFragment({ hash: 'sha256', enforce: false, keyType: 'rsa' })).toContain('CONFIG_MODULE_SIG_KEY="certs/gpu-guest-signing.pem"');
  });

  it("refuses another key's certificate, an encrypted key, and a file that is no certificate, each by name", () => {
    const other = join(dir, 'other.pem');
    openssl('genpkey', '-algorithm', 'RSA', '-pkeyopt', 'rsa_keygen_bits:2048', '-out', other);
    expect(() => readSigningIdentity(other, good.certificate)).toThrow(/kernel\.moduleSigning\.certificate: .*signing-cert\.pem is not the certificate of .*other\.pem \(its public key differs\)/);
    const encrypted = join(dir, 'encrypted.pem');
    openssl('pkey', '-in', good.key, '-aes256', '-passout', 'pass:secret', '-out', encrypted);
    expect(() => readSigningIdentity(encrypted, good.certificate)).toThrow(/kernel\.moduleSigning\.key: .*encrypted\.pem is not an unencrypted PEM private key/);
    expect(() => readSigningIdentity(good.key, good.key)).toThrow(/kernel\.moduleSigning\.certificate: .*signing-key\.pem is not an X\.509 certificate/);
  });

  it('a driver task asked to sign without a kernel build that has sign-file is E_MODULE_SIGNING', async () => {
    const ctx = { log: new TaskLog(join(dir, 'sign.log')), signal: new AbortController().signal, files: { signingKey: good.key, signingCertificate: good.certificate } } as never;
    const build = { dir: join(dir, 'no-kernel-build'), result: {} } as never;
    await expect(signModules(ctx, { hash: 'sha256', signer: TEST_SIGNER }, build, dir, ['nvidia.ko'])).rejects.toMatchObject({ code: 'E_MODULE_SIGNING', message: expect.stringContaining('the kernel build has no scripts/sign-file') });
  });
});

describe("push: skopeo's last lines become one code", () => {
  const target = { host: '127.0.0.1:9', repository: 'nvidia/vgpu-manager', tag: 't', insecure: true };
  it('a refused connection is E_PUSH_UNREACHABLE even when a digest holds the digits 401', () => {
    const tail = 'Copying blob sha256:94013e4016f1c2401aa\ntime="2026-11-22T23:30:40Z" level=fatal msg="trying to reuse blob sha256:94013e4016f1c2401aa at destination: pinging container registry 127.0.0.1:9: Get \\"http://127.0.0.1:9/v2/\\": dial tcp 127.0.0.1:9: connect: connection refused"';
    expect(explainPushFailure(tail, target, null)).toMatchObject({ code: 'E_PUSH_UNREACHABLE' });
  });
  it('an HTTP 401 or "unauthorized" is E_PUSH_AUTH; a digest with 401 in it alone is not', () => {
    expect(explainPushFailure('Error: writing blob: initiating layer upload to /v2/nvidia/blobs/uploads/ in 127.0.0.1:5000: unauthorized: authentication required', target, null)).toMatchObject({ code: 'E_PUSH_AUTH' });
    expect(explainPushFailure('Error: reading manifest: received unexpected HTTP status: 401 Unauthorized', target, null)).toMatchObject({ code: 'E_PUSH_AUTH' });
    expect(explainPushFailure('Copying blob sha256:4010401 done\nError: writing manifest: unexpected EOF', target, null)).toMatchObject({ code: 'E_PUSH_FAILED' });
  });
});

describe('values that reach a shell or a script are quoted, never spliced', () => {
  it('debugfs paths: a quote is doubled, a backslash kept, a newline refused with E_IMAGE_PATH', () => {
    expect(debugfsQuote('/etc/a"b\\c')).toBe('"/etc/a""b\\c"');
    const err = thrown(() => debugfsQuote('/tmp/a\nb'));
    expect(err.code).toBe('E_IMAGE_PATH');
    expect(err.message).toContain('"/tmp/a\\nb"');
  });

  it('the verify init carries check names, module names and the file system type as single words', () => {
    const dir = testDir();
    const marker = join(dir, 'pwned');
    const hostile = 'x$(touch pwned)`touch pwned`';
    const script = verifyInit(guestChecks({ release: hostile, options: [], modules: [`${hostile}.ko`] }), hostile);
    // run only the parts that expand values: the checks, with every command they call made harmless
    const body = script.split('\n').filter((l) => l.startsWith('name=') || l.startsWith('fs=')).join('\n');
    const bin = join(dir, 'bin');
    mkdirSync(bin);
    for (const tool of ['chroot', 'uname', 'grep', 'test', 'head']) {
      writeFileSync(join(bin, tool), '#!/bin/sh\nexit 1\n', { mode: 0o755 });
    }
    const out = execFileSync('/bin/sh', ['-c', body], { cwd: dir, env: { PATH: `${bin}:/usr/bin:/bin` }, encoding: 'utf8' });
    expect(existsSync(marker)).toBe(false);
    expect(out).toContain(`GG-CHECK module-present:${hostile} fail`);
    expect(quote("it's")).toBe(`'it'\\''s'`);
  });
});

describe('image: a mkfs.ext4 failure keeps its own cause', () => {
  it('is E_COMMAND_FAILED with mkfs lines when mkfs fails for another reason than space, never E_IMAGE_TOO_SMALL', async () => {
    const { image } = await import('../../src/steps/image/image.js');
    const dir = testDir();
    mkdirSync(join(dir, 'root/etc'), { recursive: true });
    writeFileSync(join(dir, 'root/etc/os-release'), 'ID=debian\n');
    mkdirSync(join(dir, 'up'));
    execFileSync('tar', ['-cf', join(dir, 'up/rootfs.tar'), '-C', join(dir, 'root'), '.']);
    const bin = join(dir, 'bin');
    mkdirSync(bin);
    writeFileSync(join(bin, 'mkfs.ext4'), '#!/bin/sh\necho "mkfs.ext4: Device size reported to be zero (test)" >&2\nexit 1\n', { mode: 0o755 });
    const log = new TaskLog(join(dir, 'task.log'));
    const path = process.env.PATH;
    process.env.PATH = `${bin}:${path}`;
    try {
      mkdirSync(join(dir, 'out'));
      mkdirSync(join(dir, 'work'));
      const ctx = {
        task: { id: 'image', kind: 'image', upstream: { rootfs: 'rootfs' }, params: {}, files: {}, title: 'image' },
        key: 'e'.repeat(64),
        params: { format: 'ext4' as const, marginMiB: 16, sizeMiB: null, flavour: 'nvidia-gpu', vendor: 'nvidia' as const, sourceDate: 1704067200 },
        files: { recipe: join(repoRoot, 'rootfs/debian') },
        locations: {},
        outDir: join(dir, 'out'),
        workDir: join(dir, 'work'),
        upstream: { rootfs: { dir: join(dir, 'up'), result: { tarball: 'rootfs.tar' } } },
        log,
        signal: new AbortController().signal,
        progress: () => undefined,
        earlier: async () => [],
        cacheDir: join(dir, 'cache'),
        sourceDate: 1704067200,
        network: true,
      };
      const err = await image.run(ctx).catch((e) => e);
      expect(err.code).toBe('E_COMMAND_FAILED');
      expect(err.message).toMatch(/^mkfs\.ext4 .* exited with status 1/);
      expect(err.details).toContain('mkfs.ext4: Device size reported to be zero (test)');
    } finally {
      process.env.PATH = path;
      log.close();
    }
  });
});
