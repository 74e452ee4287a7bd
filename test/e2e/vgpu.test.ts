import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdirSync, readdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { buildDriverRun, buildNvidiaRun, type DriverRun } from '../fixtures/driver.js';
import { writeBaseImage } from '../fixtures/oci.js';
import { operatorImage } from '../fixtures/operator.js';
import { startCuttingProxy, startRegistry, type Registry } from '../fixtures/registry.js';
import { cliBin, pathWithout, run, sharedCacheDir, suiteDir, testDir } from '../helpers.js';

const VERSION = '550.54.16';
let dir: string;
let driver: DriverRun;
let open: Registry;
let locked: Registry;
const PASSWORD = 'S3cret-pass-for-test';

/** A vgpu pipeline for Debian 12 nodes (os tag debian12): only a Debian mirror is reachable here. */
function vgpuPipeline(where: string, registry: string, vgpuExtra = '', runFile = driver): string {
  const file = join(where, 'nvidia-vgpu-test.yaml');
  writeFileSync(
    file,
    `name: vgpu-test\nvendor: nvidia-vgpu\nrootfs:\n  distro: debian\n  suite: bookworm\nvgpu:\n  path: ${runFile.file}\n  sha256: ${runFile.sha256}\n  osTag: debian12\n  registry: ${registry}\n${vgpuExtra}`,
  );
  return file;
}

/** NVIDIA's real 535.261.03 kernel tree (Debian's packages) in a .run named as the vGPU host driver. */
function realVgpuRun(where: string): DriverRun {
  const real = buildNvidiaRun(sharedCacheDir(), where);
  const file = join(where, `NVIDIA-Linux-x86_64-${real.version}-vgpu-kvm.run`);
  renameSync(real.file, file);
  return { ...real, file };
}

/** The newest Debian 6.1 kernel release (uname -r) the host's apt sources offer headers for: a node kernel. */
function newestDebianKernel(): string {
  const names = execFileSync('apt-cache', ['search', '--names-only', '^linux-headers-6\\.1\\.0-[0-9]+-amd64$'], { encoding: 'utf8' })
    .split('\n')
    .map((l) => /^linux-headers-(6\.1\.0-(\d+)-amd64) /.exec(l))
    .filter((m) => m !== null);
  if (!names.length) throw new Error('the host has no linux-headers-6.1.0-N-amd64 in its apt lists (run apt-get update)');
  return names.sort((a, b) => Number(a[2]) - Number(b[2])).at(-1)![1]!;
}

const common = (where: string) => ['--cache-dir', sharedCacheDir(), '--out-dir', join(where, 'out')];

beforeAll(async () => {
  dir = suiteDir('gpu-guest-vgpu-');
  driver = buildDriverRun(dir, VERSION, { suffix: '-vgpu-kvm' });
  open = await startRegistry(join(dir, 'open'));
  locked = await startRegistry(join(dir, 'locked'), { user: 'builder', password: PASSWORD });
}, 600_000);
afterAll(async () => {
  await open?.stop();
  await locked?.stop();
});

describe('vGPU manager image', () => {
  let layout: string;
  let digest: string;
  let first: Awaited<ReturnType<typeof run>>;
  // the image every test below reads, built here so that each test stands on its own
  beforeAll(async () => {
    first = await run(cliBin, ['build', '--pipeline', vgpuPipeline(dir, `${open.host}/nvidia`), ...common(dir)]);
    layout = join(dir, 'out/vgpu-test/vgpu-manager/layout');
    digest = first.code === 0 ? JSON.parse(readFileSync(join(layout, 'index.json'), 'utf8')).manifests[0].digest : '';
  }, 600_000);

  it('builds a valid, tagged OCI image layout without a daemon', async () => {
    expect(first.code, first.stderr).toBe(0);
    expect(JSON.parse(readFileSync(join(layout, 'oci-layout'), 'utf8'))).toEqual({ imageLayoutVersion: '1.0.0' });
    for (const name of readdirSync(join(layout, 'blobs/sha256'))) {
      expect(createHash('sha256').update(readFileSync(join(layout, 'blobs/sha256', name))).digest('hex')).toBe(name);
    }
    const index = JSON.parse(readFileSync(join(layout, 'index.json'), 'utf8'));
    expect(index.manifests[0].annotations['org.opencontainers.image.ref.name']).toBe(`${VERSION}-debian12`);
    expect(index.manifests[0].digest).toBe(digest);
    const blob = (d: string) => JSON.parse(readFileSync(join(layout, 'blobs', ...d.split(':')), 'utf8'));
    const manifest = blob(digest);
    const config = blob(manifest.config.digest);
    expect(config.config.Entrypoint).toEqual(['nvidia-driver', 'init']);
    expect(config.config.Env).toContain(`DRIVER_VERSION=${VERSION}`);
    expect(config.config.Labels).toMatchObject({ 'org.opencontainers.image.version': `${VERSION}-debian12`, 'org.opencontainers.image.created': '2024-01-01T00:00:00Z', 'com.nvidia.driver.version': VERSION });
    expect(config.rootfs.diff_ids).toHaveLength(manifest.layers.length);
    const top = join(layout, 'blobs', ...manifest.layers.at(-1).digest.split(':'));
    const files = execFileSync('tar', ['-tvzf', top], { encoding: 'utf8' });
    expect(files).toMatch(new RegExp(`^-rwxr-xr-x 0/0 .* \\./driver/NVIDIA-Linux-x86_64-${VERSION}-vgpu-kvm\\.run$`, 'm'));
    expect(files).toMatch(/^-rwxr-xr-x 0\/0 .* \.\/usr\/local\/bin\/nvidia-driver$/m);
    expect(readFileSync(join(dir, 'out/vgpu-test/vgpu-manager/digest'), 'utf8').trim()).toBe(digest);
    expect(execFileSync('skopeo', ['inspect', '--format', '{{.Digest}}', `oci-archive:${join(dir, 'out/vgpu-test/vgpu-manager/vgpu-manager.oci.tar')}`], { encoding: 'utf8' }).trim()).toBe(digest);
  }, 600_000);

  it('gives the same manifest digest when built again', async () => {
    const r = await run(cliBin, ['build', '--force', 'vgpu-image', '--pipeline', vgpuPipeline(dir, `${open.host}/nvidia`), ...common(dir)]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/succeeded vgpu-image/);
    expect(readFileSync(join(dir, 'out/vgpu-test/vgpu-manager/digest'), 'utf8').trim()).toBe(digest);
  }, 600_000);

  it('pushes to an open registry with skopeo, and the registry serves it back with the .run under /driver/', async () => {
    const r = await run(cliBin, ['push', '--insecure-registry', '--pipeline', vgpuPipeline(dir, `${open.host}/nvidia`), ...common(dir)]);
    expect(r.code, r.stderr).toBe(0);
    const ref = `${open.host}/nvidia/vgpu-manager:${VERSION}-debian12`;
    expect(r.stdout).toContain(`pushed ${ref}@${digest}`);
    expect(execFileSync('skopeo', ['inspect', '--tls-verify=false', '--format', '{{.Digest}}', `docker://${ref}`], { encoding: 'utf8' }).trim()).toBe(digest);
    const pulled = testDir();
    execFileSync('skopeo', ['copy', '--src-tls-verify=false', `docker://${ref}`, `oci:${join(pulled, 'img')}:x`], { stdio: 'ignore' });
    const manifest = JSON.parse(readFileSync(join(pulled, 'img/blobs/sha256', digest.slice(7)), 'utf8'));
    const top = join(pulled, 'img/blobs', ...manifest.layers.at(-1).digest.split(':'));
    expect(execFileSync('tar', ['-tzf', top], { encoding: 'utf8' })).toContain(`./driver/NVIDIA-Linux-x86_64-${VERSION}-vgpu-kvm.run`);
    // the values as helm hands them to the operator, and the image the operator pulls on a Debian 12 node
    const text = readFileSync(join(dir, 'out/vgpu-test/gpu-operator/values.yaml'), 'utf8');
    const values = parse(text);
    expect(values.sandboxWorkloads).toEqual({ enabled: true });
    expect(values.vgpuManager).toMatchObject({ enabled: true, repository: `${open.host}/nvidia`, image: 'vgpu-manager', version: VERSION, imagePullSecrets: ['vgpu-registry-secret'] });
    const debian12 = { ID: 'debian', VERSION_ID: '12' };
    const pulled1 = operatorImage(values.vgpuManager, debian12);
    expect(pulled1).toBe(ref);
    expect(execFileSync('skopeo', ['inspect', '--tls-verify=false', '--format', '{{.Digest}}', `docker://${pulled1}`], { encoding: 'utf8' }).trim()).toBe(digest);
    // the digest the file offers instead resolves, as is, to the same image
    const pinned = /^ {2}# version: "(sha256:[0-9a-f]{64})"$/m.exec(text)?.[1];
    expect(pinned).toBe(digest);
    const pulled2 = operatorImage({ ...values.vgpuManager, version: pinned! }, debian12);
    expect(pulled2).toBe(`${open.host}/nvidia/vgpu-manager@${digest}`);
    expect(execFileSync('skopeo', ['inspect', '--tls-verify=false', '--format', '{{.Digest}}', `docker://${pulled2}`], { encoding: 'utf8' }).trim()).toBe(digest);
    expect(r.stdout).toContain(`it pulls ${ref} on nodes whose /etc/os-release says ID=debian VERSION_ID=12`);
    expect(readFileSync(join(dir, 'out/vgpu-test/gpu-operator/create-pull-secret.sh'), 'utf8')).toContain('--docker-password=<PASSWORD>');
  }, 300_000);

  for (const tool of ['skopeo', 'api'] as const) {
    it(`pushes to a registry with basic auth (${tool}); a wrong password fails clearly; the password is never shown`, async () => {
      const where = testDir();
      const pipeline = vgpuPipeline(where, `${locked.host}/nvidia`);
      const bad = await run(cliBin, ['build', '--push', '--push-with', tool, '--insecure-registry', '--pipeline', pipeline, ...common(where)], { env: { REGISTRY_USERNAME: 'builder', REGISTRY_PASSWORD: 'wrong-password' } });
      expect(bad.code).toBe(1);
      expect(bad.stderr).toMatch(/E_PUSH_AUTH: 127\.0\.0\.1:\d+ refused the credentials from REGISTRY_USERNAME\/REGISTRY_PASSWORD/);
      const ok = await run(cliBin, ['push', '--push-with', tool, '--insecure-registry', '--pipeline', pipeline, ...common(where)], { env: { REGISTRY_USERNAME: 'builder', REGISTRY_PASSWORD: PASSWORD } });
      expect(ok.code, ok.stderr).toBe(0);
      expect(ok.stdout).toContain(`@${digest}`);
      const logs = join(where, 'out/vgpu-test/logs');
      const everything = [bad.stdout, bad.stderr, ok.stdout, ok.stderr, ...readdirSync(logs).map((f) => readFileSync(join(logs, f), 'utf8')), readFileSync(join(where, 'out/vgpu-test/manifest.json'), 'utf8')].join('\n');
      expect(everything).not.toContain(PASSWORD);
      expect(everything).not.toContain(Buffer.from(`builder:${PASSWORD}`).toString('base64'));
    }, 300_000);
  }

  it('fails cleanly when the registry goes away mid-upload, and a retry succeeds', async () => {
    const where = testDir();
    const target = await startRegistry(join(where, 'reg'));
    const proxy = await startCuttingProxy(target.host, 2 * 1024 * 1024);
    try {
      const pipeline = vgpuPipeline(where, `${proxy.host}/nvidia`);
      const first = await run(cliBin, ['build', '--push', '--insecure-registry', '--pipeline', pipeline, ...common(where)]);
      expect(first.code).toBe(1);
      expect(proxy.cut()).toBe(true);
      expect(first.stderr).toMatch(/^error: E_PUSH_FAILED: push of 127\.0\.0\.1:\d+\/nvidia\/vgpu-manager:.* failed .*run push again/m);
      const retry = await run(cliBin, ['push', '--insecure-registry', '--pipeline', pipeline, ...common(where)]);
      expect(retry.code, retry.stderr).toBe(0);
    } finally {
      await proxy.close();
      await target.stop();
    }
  }, 300_000);

  it('builds on the user\'s own base image for a RHEL-family tag (oci-archive of a RHEL base)', async () => {
    const where = testDir();
    const rhelLayout = writeBaseImage(where, 'NAME="Red Hat Enterprise Linux"\nID="rhel"\nVERSION_ID="8.9"\n');
    const archive = join(where, 'rhel8-base.oci.tar');
    execFileSync('tar', ['-cf', archive, '-C', rhelLayout, '.']);
    const r = await run(cliBin, ['build', '--pipeline', vgpuPipeline(where, `${open.host}/nvidia`, `  baseImage: ${archive}\n`), ...common(where), '--set', 'vgpu.osTag=rhel8.10']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).not.toMatch(/rootfs/);
    const layoutDir = join(where, 'out/vgpu-test/vgpu-manager/layout');
    const blob = (d: string) => JSON.parse(readFileSync(join(layoutDir, 'blobs', ...d.split(':')), 'utf8'));
    const index = JSON.parse(readFileSync(join(layoutDir, 'index.json'), 'utf8'));
    expect(index.manifests[0].annotations['org.opencontainers.image.ref.name']).toBe(`${VERSION}-rhel8.10`);
    const baseIndex = JSON.parse(readFileSync(join(rhelLayout, 'index.json'), 'utf8'));
    const baseManifest = JSON.parse(readFileSync(join(rhelLayout, 'blobs', ...baseIndex.manifests[0].digest.split(':')), 'utf8'));
    const manifest = blob(index.manifests[0].digest);
    // the base image's layers, unchanged, then one new layer with the driver
    expect(manifest.layers.slice(0, baseManifest.layers.length)).toEqual(baseManifest.layers);
    expect(manifest.layers).toHaveLength(baseManifest.layers.length + 1);
    expect(blob(manifest.config.digest).rootfs.diff_ids).toHaveLength(manifest.layers.length);
  }, 300_000);

  it('refuses a base image whose os-release is not the OS of vgpu.osTag, naming what it is', async () => {
    const where = testDir();
    // the Debian 12 image built above, offered as the base for RHEL 8 nodes, then for RHEL 9 nodes a RHEL 8 base
    const debian = join(dir, 'out/vgpu-test/vgpu-manager/vgpu-manager.oci.tar');
    const wrong = await run(cliBin, ['build', '--pipeline', vgpuPipeline(where, `${open.host}/nvidia`, `  baseImage: ${debian}\n`), ...common(where), '--set', 'vgpu.osTag=rhel8.10']);
    expect(wrong.code).toBe(1);
    expect(wrong.stderr).toMatch(/E_BASE_IMAGE: vgpu\.baseImage \S+vgpu-manager\.oci\.tar is debian 12 \(its os-release\), but vgpu\.osTag rhel8\.10 is for other nodes/);
    const rhel8 = writeBaseImage(where, 'ID="rhel"\nVERSION_ID="8.9"\n');
    const older = await run(cliBin, ['build', '--pipeline', vgpuPipeline(where, `${open.host}/nvidia`, `  baseImage: ${rhel8}\n`), ...common(where), '--set', 'vgpu.osTag=rhel9.4']);
    expect(older.code).toBe(1);
    expect(older.stderr).toMatch(/E_BASE_IMAGE: .* is rhel 8\.9 \(its os-release\), but vgpu\.osTag rhel9\.4/);
    expect(readdirSync(join(where, 'out/vgpu-test')).includes('vgpu-manager')).toBe(false);
  }, 300_000);

  it('builds with buildah (daemonless) from a Dockerfile folder, and push sends that image', async () => {
    const where = testDir();
    const context = join(where, 'vgpu-manager-debian12');
    mkdirSync(context);
    // NVIDIA's vgpu-manager Dockerfiles copy the .run into /driver; FROM scratch keeps the test offline
    writeFileSync(join(context, 'Dockerfile'), `FROM scratch\nARG DRIVER_VERSION\nCOPY NVIDIA-Linux-x86_64-${VERSION}-vgpu-kvm.run /driver/\n`);
    const file = vgpuPipeline(where, `${open.host}/engine`, `  engine: buildah\n  dockerfileDir: ${context}\n`);
    const build = await run(cliBin, ['build', '--pipeline', file, ...common(where)]);
    expect(build.code, build.stderr).toBe(0);
    const digest = readFileSync(join(where, 'out/vgpu-test/vgpu-manager/digest'), 'utf8').trim();
    const index = JSON.parse(readFileSync(join(where, 'out/vgpu-test/vgpu-manager/layout/index.json'), 'utf8'));
    expect(index.manifests[0]).toMatchObject({ digest, annotations: { 'org.opencontainers.image.ref.name': `${VERSION}-debian12` } });
    const push = await run(cliBin, ['push', '--insecure-registry', '--pipeline', file, ...common(where)]);
    expect(push.code, push.stderr).toBe(0);
    const ref = `${open.host}/engine/vgpu-manager:${VERSION}-debian12`;
    expect(push.stdout).toContain(`pushed ${ref}@${digest}`);
    expect(execFileSync('skopeo', ['inspect', '--tls-verify=false', '--format', '{{.Digest}}', `docker://${ref}`], { encoding: 'utf8' }).trim()).toBe(digest);
  }, 300_000);

  it("prebuilds NVIDIA's modules for a node kernel (vgpu.hostKernels) with the distribution's headers, and the kernel's modules they need", async () => {
    const where = testDir();
    const release = newestDebianKernel();
    const r = await run(cliBin, ['build', '--pipeline', vgpuPipeline(where, `${open.host}/prebuilt`, `  hostKernels: [${release}]\n`, realVgpuRun(where)), ...common(where)]);
    expect(r.code, `${r.stdout}\n${r.stderr}`).toBe(0);
    const manifest = JSON.parse(readFileSync(join(where, 'out/vgpu-test/manifest.json'), 'utf8'));
    const built = manifest.tasks.find((t: { id: string }) => t.id === 'vgpu-host-modules').result.releases[0];
    expect(built).toMatchObject({ release, headers: { package: `linux-headers-${release}`, version: expect.stringMatching(/^6\.1\./), sha256: expect.stringMatching(/^[0-9a-f]{64}$/) }, image: { package: `linux-image-${release}` } });
    expect(built.modules).toEqual(expect.arrayContaining(['updates/nvidia/nvidia.ko', 'updates/nvidia/nvidia-drm.ko']));
    // nvidia-drm needs the kernel's DRM: it comes along, from the distribution's image package
    expect(built.dependencies).toEqual(expect.arrayContaining([expect.stringMatching(/^kernel\/drivers\/gpu\/drm\/drm\.ko/)]));
    // in the image: /driver/prebuilt/<release>/ laid out as /lib/modules/<release>, nvidia.ko for that kernel
    const layout = join(where, 'out/vgpu-test/vgpu-manager/layout');
    const index = JSON.parse(readFileSync(join(layout, 'index.json'), 'utf8'));
    const manifestBlob = JSON.parse(readFileSync(join(layout, 'blobs', ...index.manifests[0].digest.split(':')), 'utf8'));
    const top = join(layout, 'blobs', ...manifestBlob.layers.at(-1).digest.split(':'));
    const listing = execFileSync('tar', ['-tzf', top], { encoding: 'utf8', maxBuffer: 1 << 26 });
    for (const f of ['updates/nvidia/nvidia.ko', 'modules.builtin', 'modules.order', ...built.dependencies]) expect(listing).toContain(`./driver/prebuilt/${release}/${f}\n`);
    const ko = join(where, 'nvidia.ko');
    writeFileSync(ko, execFileSync('tar', ['-xzOf', top, `./driver/prebuilt/${release}/updates/nvidia/nvidia.ko`], { maxBuffer: 1 << 28 }));
    expect(execFileSync('modinfo', ['-F', 'vermagic', ko], { encoding: 'utf8' })).toMatch(new RegExp(`^${release.replace(/\./g, '\\.')} `));
  }, 1_200_000);

  it('names the node kernels the base has no packages for: an unknown release, a pinned version it lacks', async () => {
    const where = testDir();
    const release = newestDebianKernel();
    const r = await run(cliBin, ['build', '--pipeline', vgpuPipeline(where, `${open.host}/prebuilt`, `  hostKernels: [6.1.0-999-amd64, ${release}=0.0-nope]\n`, realVgpuRun(where)), ...common(where)]);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(`E_NOT_FOUND: vgpu.hostKernels ${[`${release}=0.0-nope`, '6.1.0-999-amd64'].sort().join(', ')}: the base's apt sources have no kernel packages for these releases`);
  }, 600_000);

  it('says clearly when the chosen build engine is not installed', async () => {
    const where = testDir();
    const r = await run(cliBin, ['build', '--pipeline', vgpuPipeline(where, `${open.host}/nvidia`, `  engine: buildah\n  dockerfileDir: ${where}\n`), ...common(where)], { env: { PATH: pathWithout(where, ['buildah']) } });
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/E_MISSING_TOOL: vgpu\.engine is buildah, but buildah is not installed/);
  });

  it('accepts the AI Enterprise file under the -vgpu-kvm.run name', async () => {
    const where = testDir();
    const aie = buildDriverRun(where, VERSION, { suffix: '-vgpu-kvm-aie' });
    const r = await run(cliBin, ['plan', '--json', '--pipeline', vgpuPipeline(where, `${open.host}/nvidia`, '', aie), ...common(where)]);
    expect(r.code, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout).tasks.find((t: { id: string }) => t.id === 'vgpu-image').params.imageName).toBe(`NVIDIA-Linux-x86_64-${VERSION}-vgpu-kvm.run`);
  });
});

describe('vGPU bad inputs', () => {
  const cases: [string, (w: string) => string[], number, RegExp][] = [
    ['a file name that does not parse', (w) => { const f = join(w, 'driver.run'); writeFileSync(f, 'x'); return ['--set', `vgpu.path=${f}`]; }, 2, /E_VGPU_NAME: .*driver\.run is not a vGPU host driver name \(expected NVIDIA-Linux-x86_64-<version>-vgpu-kvm\.run/],
    ['an unknown os tag', () => ['--set', 'vgpu.osTag=windows11'], 2, /vgpu\.osTag 'windows11' is not one the GPU Operator uses/],
    ['a malformed registry reference', () => ['--set', 'vgpu.registry=https://Registry.Example.com/nvidia:latest'], 2, /vgpu\.registry 'https:\/\/Registry\.Example\.com\/nvidia:latest' is not a registry reference/],
    ['a rhel tag without a base image', () => ['--set', 'vgpu.osTag=rhel9.4'], 2, /vgpu\.osTag rhel9\.4 has a RHEL-family base.*give vgpu\.baseImage/],
    ['a rhel tag without the minor version the operator puts in it', () => ['--set', 'vgpu.osTag=rhel9'], 2, /vgpu\.osTag 'rhel9' is not one the GPU Operator uses \(.*rhel<major>\.<minor> such as rhel9\.4/],
  ];
  it.each(cases)('rejects %s', async (_, extra, code, message) => {
    const where = testDir();
    const r = await run(cliBin, ['plan', '--pipeline', vgpuPipeline(where, 'registry.example.com/nvidia'), ...common(where), ...extra(where)]);
    expect(r.code).toBe(code);
    expect(r.stderr).toMatch(message);
  });

  it('rejects a pipeline without a sha256', async () => {
    const where = testDir();
    const file = vgpuPipeline(where, 'registry.example.com/nvidia');
    writeFileSync(file, readFileSync(file, 'utf8').replace(/  sha256: .*\n/, ''));
    const r = await run(cliBin, ['plan', '--pipeline', file, ...common(where)]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/vgpu\.sha256: required key is missing/);
  });

  it('rejects a .run whose sha256 does not match', async () => {
    const where = testDir();
    const r = await run(cliBin, ['build', '--pipeline', vgpuPipeline(where, 'registry.example.com/nvidia'), ...common(where), '--set', `vgpu.sha256=${'0'.repeat(64)}`]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/E_CHECKSUM_MISMATCH: vGPU driver NVIDIA-Linux-x86_64-550\.54\.16-vgpu-kvm\.run: sha256 is [0-9a-f]{64}, the pipeline pins 0{64}/);
  }, 300_000);

  it('fails clearly on an unreachable registry', async () => {
    const where = testDir();
    const pipeline = vgpuPipeline(where, '127.0.0.1:9/nvidia');
    expect((await run(cliBin, ['build', '--pipeline', pipeline, ...common(where)])).code).toBe(0);
    const r = await run(cliBin, ['push', '--insecure-registry', '--pipeline', pipeline, ...common(where)]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/E_PUSH_UNREACHABLE: cannot reach the registry 127\.0\.0\.1:9/);
  }, 300_000);
});
