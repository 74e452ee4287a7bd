import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { GuestError } from '../../src/model/errors.js';
import { loadPipeline } from '../../src/pipeline/load.js';
import { repoRoot, testDir } from '../helpers.js';

const SHA = 'a'.repeat(64);

function pipelineFile(text: string): string {
  const dir = testDir();
  const file = join(dir, 'p.yaml');
  writeFileSync(file, text);
  return file;
}

const minimal = `name: mini
vendor: intel
kernel:
  version: "6.1"
  baseConfig: kernel-configs/base/minimal/x86_64.conf
  localVersion: -intel-gpu
rootfs:
  distro: debian
  suite: bookworm
`;

function failure(fn: () => unknown): GuestError {
  try {
    fn();
  } catch (err) {
    if (err instanceof GuestError) return err;
    throw err;
  }
  throw new Error('expected an error');
}

describe('loadPipeline', () => {
  it('loads the shipped pipelines and fills defaults', () => {
    const intel = loadPipeline({ vendor: 'intel' }).pipeline;
    expect(intel.kernel.packages).toBe('deb');
    expect(intel.rootfs.variant).toBe('minbase');
    expect(intel.image.format).toBe('ext4');
    expect(intel.kernel.fragments[0]).toBe(join(repoRoot, 'kernel-configs/fragments/gpu/intel.conf'));
    const nvidia = loadPipeline({ vendor: 'nvidia', sets: [`driver.sha256=${SHA}`] }).pipeline;
    expect(nvidia.driver?.moduleType).toBe('open');
  });

  it('applies --set overrides with the schema type of the key', () => {
    const p = loadPipeline({ vendor: 'intel', sets: ['kernel.version=6.1.55', 'image.marginMiB=128', 'rootfs.packages=vim,less', 'rootfs.keepBuildPackages=true'] }).pipeline;
    expect(p.kernel.version).toBe('6.1.55');
    expect(p.image.marginMiB).toBe(128);
    expect(p.rootfs.packages).toEqual(['vim', 'less']);
    expect(p.rootfs.keepBuildPackages).toBe(true);
  });

  it('resolves ./ paths against the pipeline file and bare relative paths against the project', () => {
    const file = pipelineFile(minimal.replace('kernel-configs/base/minimal/x86_64.conf', './base.conf'));
    writeFileSync(join(file, '..', 'base.conf'), '');
    const p = loadPipeline({ file }).pipeline;
    expect(p.kernel.baseConfig).toBe(join(file, '..', 'base.conf'));
  });

  it('kernel.profile: kata (the default, and the shipped pipelines\' choice) is the minimal base plus the kata fragment folder', () => {
    const kata = join(repoRoot, 'kernel-configs/base/kata/x86_64');
    const base = join(repoRoot, 'kernel-configs/base/minimal/x86_64.conf');
    for (const vendor of ['intel', 'nvidia']) {
      const k = loadPipeline({ vendor, sets: vendor === 'nvidia' ? [`driver.sha256=${SHA}`] : [] }).pipeline.kernel;
      expect([k.profile, k.baseConfig, k.profileFragments]).toEqual(['kata', base, [kata]]);
    }
    const none = loadPipeline({ file: pipelineFile(minimal.replace('  baseConfig: kernel-configs/base/minimal/x86_64.conf\n', '')) }).pipeline.kernel;
    expect([none.profile, none.baseConfig, none.profileFragments]).toEqual(['kata', base, [kata]]);
    const small = loadPipeline({ vendor: 'intel', sets: ['kernel.profile=minimal'] }).pipeline.kernel;
    expect([small.profile, small.baseConfig, small.profileFragments]).toEqual(['minimal', base, []]);
    const own = loadPipeline({ file: pipelineFile(minimal) }).pipeline.kernel;
    expect([own.profile, own.profileFragments]).toEqual([undefined, []]);
  });

  const bad: [string, () => unknown, string, RegExp][] = [
    ['unknown vendor', () => loadPipeline({ vendor: 'amd' }), 'E_UNKNOWN_VENDOR', /unknown vendor 'amd' \(pipelines available: .*intel.*nvidia/],
    ['missing pipeline file', () => loadPipeline({ file: '/nonexistent/p.yaml' }), 'E_PIPELINE_NOT_FOUND', /pipeline file \/nonexistent\/p.yaml does not exist/],
    ['no pipeline named', () => loadPipeline({}), 'E_USAGE', /name a pipeline: --vendor .* or --pipeline FILE/],
    ['YAML syntax error', () => loadPipeline({ file: pipelineFile('name: x\nkernel:\n  version: "6.1\n  bad: [\n') }), 'E_PIPELINE_SYNTAX', /p\.yaml:\d+:\d+: YAML syntax error/],
    ['unknown key', () => loadPipeline({ file: pipelineFile(minimal.replace('  localVersion', '  locaVersion: -x\n  localVersion')) }), 'E_PIPELINE_INVALID', /p\.yaml:6:3: kernel\.locaVersion: unknown key \(expected one of: version, source/],
    ['wrong type', () => loadPipeline({ file: pipelineFile(minimal.replace('"6.1"', '6.1')) }), 'E_PIPELINE_INVALID', /p\.yaml:4:12: kernel\.version: expected string, found number 6\.1 \(quote it/],
    ['bad enum', () => loadPipeline({ file: pipelineFile(`${minimal}image:\n  format: qcow2\n`) }), 'E_PIPELINE_INVALID', /p\.yaml:11:11: image\.format: expected one of ext4, erofs, initrd, found string "qcow2"/],
    ['missing required key', () => loadPipeline({ file: pipelineFile(minimal.replace('  suite: bookworm\n', '')) }), 'E_PIPELINE_INVALID', /rootfs\.suite: required key is missing/],
    ['profile and baseConfig', () => loadPipeline({ vendor: 'intel', sets: ['kernel.baseConfig=./base.conf'] }), 'E_PIPELINE_INVALID', /--set kernel\.baseConfig=\.\/base\.conf: kernel: give either profile \(a shipped base: kata or minimal\) or baseConfig \(your own base file\), not both/],
    ['unknown profile', () => loadPipeline({ vendor: 'intel', sets: ['kernel.profile=tiny'] }), 'E_PIPELINE_INVALID', /kernel\.profile: expected one of kata, minimal, found string "tiny"/],
    ['bad --set path', () => loadPipeline({ vendor: 'intel', sets: ['kernel.verison=6.1'] }), 'E_SET_PATH', /--set kernel\.verison=6\.1: no key 'verison' under kernel \(known keys: version,/],
    ['--set without =', () => loadPipeline({ vendor: 'intel', sets: ['kernel.version'] }), 'E_SET_PATH', /expected key\.path=value/],
    ['--set wrong type', () => loadPipeline({ vendor: 'intel', sets: ['image.marginMiB=lots'] }), 'E_SET_PATH', /--set image\.marginMiB=lots: expected a number, found 'lots'/],
    ['--set invalid value', () => loadPipeline({ vendor: 'intel', sets: ['image.format=qcow2'] }), 'E_PIPELINE_INVALID', /^--set image\.format=qcow2: image\.format: expected one of/],
    ['missing fragment file', () => loadPipeline({ vendor: 'intel', sets: ['kernel.fragments=./nope.conf'] }), 'E_PIPELINE_INVALID', /kernel\.fragments\[0\]: .*nope\.conf does not exist/],
    ['nvidia without driver sha256', () => loadPipeline({ vendor: 'nvidia' }), 'E_PIPELINE_INVALID', /nvidia\.yaml:\d+:\d+: driver\.sha256: required with driver\.source: run \(the \.run's sha256/],
    ['a package name with a shell substitution', () => loadPipeline({ vendor: 'intel', sets: ['rootfs.packages=[gcc, "$(id)"]'] }), 'E_PIPELINE_INVALID', /rootfs\.packages\[1\]: expected a Debian package name \(lowercase letters, digits, \+ - \.; optionally :arch and =version\), found string "\$\(id\)"/],
    ['a package name with a slash', () => loadPipeline({ vendor: 'nvidia', sets: [`driver.sha256=${SHA}`, 'rootfs.extraPackages=[gcc/bookworm]'] }), 'E_PIPELINE_INVALID', /rootfs\.extraPackages\[0\]: expected a Debian package name/],
    ['a component with a semicolon', () => loadPipeline({ vendor: 'intel', sets: ['rootfs.components=[main;rm]'] }), 'E_PIPELINE_INVALID', /rootfs\.components\[0\]: expected a Debian archive component/],
    ['a toolkit repository suite that would break the sources line', () => loadPipeline({ vendor: 'nvidia', sets: [`driver.sha256=${SHA}`, 'toolkit.repository={url: "https://repo.example/deb", suite: "stable main\\ndeb http://evil.example", key: "/k.gpg"}'] }), 'E_PIPELINE_INVALID', /toolkit\.repository\.suite: expected a Debian suite or codename/],
    ['driver in an intel pipeline', () => loadPipeline({ vendor: 'intel', sets: ['driver={version: "1.0", sha256: "' + SHA + '"}'] }), 'E_PIPELINE_INVALID', /driver: not used by vendor intel/],
  ];
  it('accepts Debian names with an architecture or a version, and a flat repository suite', () => {
    const p = loadPipeline({ vendor: 'intel', sets: ['rootfs.packages=[libc6:amd64, "gcc=4:12.2.0-3", g++, libstdc++6]', 'rootfs.components=[main, non-free-firmware]'] }).pipeline;
    expect(p.rootfs.packages).toEqual(['libc6:amd64', 'gcc=4:12.2.0-3', 'g++', 'libstdc++6']);
    const key = join(testDir(), 'k.gpg');
    writeFileSync(key, '');
    const n = loadPipeline({ vendor: 'nvidia', sets: [`driver.sha256=${SHA}`, `toolkit.repository={url: "https://repo.example/deb", suite: "/", key: "${key}"}`] }).pipeline;
    expect(n.toolkit!.repository!.suite).toBe('/');
  });

  it.each(bad)('rejects %s', (_, fn, code, message) => {
    const err = failure(fn);
    expect(err.code).toBe(code);
    expect(err.message).toMatch(message);
  });
});

describe('the pipeline schema', () => {
  it('is valid JSON Schema (load compiles it without checking, to start faster)', async () => {
    const { Ajv } = await import('ajv');
    const { pipelineSchema } = await import('../../src/pipeline/schema.js');
    const strict = new Ajv({ allErrors: true, strict: false, validateSchema: true });
    expect(strict.validateSchema(pipelineSchema)).toBe(true);
    expect(() => strict.compile(pipelineSchema)).not.toThrow();
  });

  it('the validator npm run build writes as code judges as the schema compiled at run time: defaults applied alike, the same errors', async () => {
    const { createRequire } = await import('node:module');
    const { readFileSync, readdirSync } = await import('node:fs');
    const { parse } = await import('yaml');
    const { pipelineValidator } = await import('../../src/pipeline/load.js');
    const built = createRequire(import.meta.url)(join(repoRoot, 'dist/pipeline/validate-pipeline.cjs')) as ReturnType<typeof pipelineValidator>;
    const compiled = pipelineValidator(true);
    const shipped = readdirSync(join(repoRoot, 'pipelines')).map((f) => parse(readFileSync(join(repoRoot, 'pipelines', f), 'utf8')) as Record<string, unknown>);
    const broken = [{ name: 'x' }, { name: 'Bad Name', vendor: 'nvidia' }, { ...shipped[0], kernel: { version: 6.1 } }, { ...shipped[0], surplus: true }, { ...shipped[0], image: { format: 'qcow3' } }];
    expect(shipped.length).toBeGreaterThan(0);
    for (const sample of [...shipped, ...broken]) {
      const a = structuredClone(sample);
      const b = structuredClone(sample);
      expect(built(a)).toBe(compiled(b));
      expect(a).toEqual(b);
      expect(built.errors ?? null).toEqual(compiled.errors ?? null);
    }
  });
});
