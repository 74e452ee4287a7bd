import { readFileSync, writeFileSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { execFileSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { Ajv } from 'ajv';
import { parse as parseYaml } from 'yaml';
import { NoOperationTraceWriter, parseWorkflow } from '@actions/workflow-parser';
import { expandMatrix, type MatrixSection } from '../../src/pipeline/matrix.js';
import { cliBin, repoRoot, run, testDir } from '../helpers.js';

const where = (path: (string | number)[]) => `p.yaml(${path.join('.')})`;
const expand = (m: MatrixSection) => expandMatrix(m, where).map((c) => c.values);

describe('expandMatrix', () => {
  it('makes the product of the axes in order, drops exclusions, extends or adds inclusions as GitHub does', () => {
    expect(expand({ 'kernel.version': ['6.1', '6.6'], 'image.format': ['ext4', 'erofs'] })).toEqual([
      { 'kernel.version': '6.1', 'image.format': 'ext4' },
      { 'kernel.version': '6.1', 'image.format': 'erofs' },
      { 'kernel.version': '6.6', 'image.format': 'ext4' },
      { 'kernel.version': '6.6', 'image.format': 'erofs' },
    ]);
    const m: MatrixSection = {
      'kernel.version': ['6.1', '6.6'],
      'image.format': ['ext4', 'erofs'],
      exclude: [{ 'kernel.version': '6.6', 'image.format': 'erofs' }],
      // extends both 6.1 combinations; contradicts every original one, so it becomes its own
      include: [{ 'kernel.version': '6.1', 'image.marginMiB': 128 }, { 'kernel.version': '6.12', 'image.format': 'ext4' }],
    };
    expect(expand(m)).toEqual([
      { 'kernel.version': '6.1', 'image.format': 'ext4', 'image.marginMiB': 128 },
      { 'kernel.version': '6.1', 'image.format': 'erofs', 'image.marginMiB': 128 },
      { 'kernel.version': '6.6', 'image.format': 'ext4' },
      { 'kernel.version': '6.12', 'image.format': 'ext4' },
    ]);
    expect(expand({ include: [{ 'rootfs.packages': ['curl', 'jq'] }] })).toEqual([{ 'rootfs.packages': ['curl', 'jq'] }]);
  });

  it.each([
    [{ 'kernel.verison': ['6.1'] }, /p\.yaml\(matrix\.kernel\.verison\): matrix: kernel\.verison: no key 'verison' under kernel \(known keys: version,/],
    [{ vendor: ['nvidia', 'intel'] }, /matrix: vendor cannot vary .* --vendor\/--pipeline instead/],
    [{ 'kernel.version': [6.1] }, /matrix: kernel\.version: 6\.1 is a number in YAML; quote it \("6\.1"\)/],
    [{ 'image.marginMiB': ['lots'] }, /matrix: image\.marginMiB=lots: expected a number, found 'lots'/],
    [{ 'image.format': ['ext4', 'ext4'] }, /matrix\.image\.format lists image\.format=ext4 twice/],
    [{ 'image.format': ['ext4'], exclude: [{ 'kernel.version': '6.1' }] }, /matrix\.exclude\[0\]: kernel\.version is not an axis of the matrix \(axes: image\.format\)/],
    [{ 'image.format': ['ext4'], exclude: [{ 'image.format': 'erofs' }] }, /matrix\.exclude\[0\] \(image\.format=erofs\) matches no combination/],
    [{ 'image.format': ['ext4'], exclude: [{ 'image.format': 'ext4' }] }, /matrix: no combination is left/],
    [{ 'image.format': ['ext4'], include: [{ 'image.format': 'ext4' }, { 'image.format': 'erofs' }, { 'image.format': 'erofs' }] }, /the combination image\.format=erofs comes twice/],
  ])('refuses %j naming the key and the fix', (m, message) => {
    expect(() => expandMatrix(m as MatrixSection, where)).toThrow(message);
    try {
      expandMatrix(m as MatrixSection, where);
    } catch (err) {
      expect((err as { code: string }).code).toBe('E_PIPELINE_INVALID');
    }
  });
});

/** The README's example matrix pipeline and nightly workflow, as the README shows them. */
function readmeExample(marker: string): string {
  const readme = readFileSync(join(repoRoot, 'README.md'), 'utf8');
  const at = readme.indexOf(`<!-- example: ${marker} -->`);
  expect(at, `README.md has no <!-- example: ${marker} --> block`).toBeGreaterThan(-1);
  const block = /```ya?ml\n([\s\S]*?)```/.exec(readme.slice(at))!;
  return block[1]!;
}

/** A matrix pipeline whose keys plan can make without the network: a local tarball, the host mirror. */
function matrixPipeline(dir: string): string {
  const tree = join(dir, 't', 'linux-6.1.192');
  mkdirSync(tree, { recursive: true });
  writeFileSync(join(tree, 'Makefile'), 'VERSION = 6\nPATCHLEVEL = 1\nSUBLEVEL = 192\nEXTRAVERSION =\n');
  execFileSync('tar', ['-C', join(dir, 't'), '-cJf', join(dir, 'linux-6.1.192.tar.xz'), 'linux-6.1.192']);
  const file = join(dir, 'nightly.yaml');
  writeFileSync(
    file,
    [
      'name: nightly',
      'vendor: intel',
      'kernel:',
      '  version: "6.1.192"',
      '  source: { tarball: ./linux-6.1.192.tar.xz }',
      '  profile: minimal',
      '  fragments: [kernel-configs/fragments/gpu/intel.conf]',
      '  localVersion: -intel-gpu',
      'rootfs: { distro: debian, suite: bookworm }',
      'matrix:',
      '  kernel.profile: [minimal, kata]',
      '  image.format: [ext4, erofs]',
      '  exclude:',
      '    - { kernel.profile: kata, image.format: erofs }',
      '',
    ].join('\n'),
  );
  return file;
}

type Workflow = { spec: { templates: { name: string; dag?: { tasks: { name: string; dependencies?: string[]; arguments: { parameters: { name: string; value: string }[] } }[] } }[] } };

describe('gpu-guest matrix', () => {
  it('--format github: one job per combination and pipeline, a strategy.matrix GitHub\'s own parser accepts', async () => {
    const dir = testDir();
    const file = matrixPipeline(dir);
    const r = await run(cliBin, ['matrix', '--pipeline', file, '--vendor', 'intel', '--format', 'github', '--set', 'image.marginMiB=32']);
    expect(r.code, r.stderr).toBe(0);
    const matrix = JSON.parse(r.stdout) as { include: { id: string; name: string; pipeline: string; args: string }[] };
    expect(matrix.include.map((j) => j.id)).toEqual(['intel', 'nightly-minimal-ext4', 'nightly-minimal-erofs', 'nightly-kata-ext4']);
    expect(matrix.include[1]).toEqual({
      id: 'nightly-minimal-ext4',
      name: 'nightly (kernel.profile=minimal, image.format=ext4)',
      pipeline: 'nightly',
      args: `--pipeline ${file} --set image.marginMiB=32 --set kernel.profile=minimal --set image.format=ext4`,
    });
    // each job's args build exactly that combination
    const plan = await run(cliBin, ['plan', '--json', ...matrix.include[3]!.args.split(' '), '--cache-dir', join(dir, 'cache')]);
    expect(plan.code, plan.stderr).toBe(0);
    const image = (JSON.parse(plan.stdout) as { tasks: { id: string; params: Record<string, unknown> }[] }).tasks.find((t) => t.id === 'image')!;
    expect(image.params).toMatchObject({ format: 'ext4', marginMiB: 32 });

    // GitHub's workflow parser (@actions/workflow-parser, its published schema) on a job using the matrix as printed
    const workflow = `on: push\njobs:\n  build:\n    runs-on: ubuntu-latest\n    strategy:\n      matrix: ${r.stdout.trim()}\n    steps:\n      - run: npx gpu-guest build \${{ matrix.args }}\n`;
    const parsed = parseWorkflow({ name: 'nightly.yml', content: workflow }, new NoOperationTraceWriter());
    expect(parsed.context.errors.getErrors().map((e) => e.message)).toEqual([]);
    // and the parser does reject a matrix of the wrong shape, so the check above can fail
    const broken = parseWorkflow({ name: 'bad.yml', content: workflow.replace(r.stdout.trim(), '{"include": "nightly"}') }, new NoOperationTraceWriter());
    expect(broken.context.errors.getErrors().length).toBeGreaterThan(0);
  });

  it('the README\'s example pipeline and nightly workflow are valid: gpu-guest reads the one, GitHub\'s parser the other', async () => {
    const dir = testDir();
    writeFileSync(join(dir, 'nightly.yaml'), readmeExample('nightly-pipeline'));
    const r = await run(cliBin, ['matrix', '--pipeline', join(dir, 'nightly.yaml'), '--format', 'json']);
    expect(r.code, r.stderr).toBe(0);
    expect((JSON.parse(r.stdout) as { jobs: unknown[] }).jobs.length).toBeGreaterThan(1);
    const parsed = parseWorkflow({ name: 'nightly.yml', content: readmeExample('nightly-workflow') }, new NoOperationTraceWriter());
    expect(parsed.context.errors.getErrors().map((e) => e.message)).toEqual([]);
    expect(readmeExample('nightly-workflow')).toContain('gpu-guest matrix');
  });

  it('--format argo: a Workflow valid under Argo\'s schema whose DAG has the task graph\'s dependencies, shared tasks once', async () => {
    const dir = testDir();
    const file = matrixPipeline(dir);
    const r = await run(cliBin, ['matrix', '--pipeline', file, '--format', 'argo', '--image', 'registry.example/gpu-guest:0.1.0', '--remote-cache', 'https://cache.example/gpu-guest']);
    expect(r.code, r.stderr).toBe(0);
    const workflow = parseYaml(r.stdout) as Workflow;

    // Argo's published schema, strict as `argo lint --strict`: no unknown field anywhere
    const schema = JSON.parse(readFileSync(join(repoRoot, 'test/data/argo-workflow.schema.json'), 'utf8')) as { definitions: Record<string, { type?: string; additionalProperties?: boolean }> };
    for (const d of Object.values(schema.definitions)) if (d.type === 'object') d.additionalProperties = false;
    const validate = new Ajv({ allErrors: true, strict: false }).compile(schema);
    expect(validate(workflow), JSON.stringify(validate.errors)).toBe(true);
    const typo = structuredClone(workflow) as unknown as { spec: { templates: Record<string, unknown>[] } };
    typo.spec.templates[0]!.dependancies = [];
    expect(validate(typo)).toBe(false);

    // the DAG against each job's task graph, as `gpu-guest plan` makes it from the job's own args
    const tasks = workflow.spec.templates.find((t) => t.name === 'pipelines')!.dag!.tasks;
    const param = (t: (typeof tasks)[number], name: string) => t.arguments.parameters.find((p) => p.name === name)!.value;
    const jobs = JSON.parse((await run(cliBin, ['matrix', '--pipeline', file, '--format', 'json'])).stdout) as { jobs: { id: string; args: string[] }[] };
    expect(jobs.jobs.length).toBe(3);
    const keys = new Map<string, string>();
    for (const job of jobs.jobs) {
      const plan = await run(cliBin, ['plan', '--json', ...job.args, '--cache-dir', join(dir, 'cache')]);
      expect(plan.code, plan.stderr).toBe(0);
      const graph = (JSON.parse(plan.stdout) as { tasks: { id: string; deps: string[]; key: string }[] }).tasks;
      const nodeOf = (task: string) => {
        const found = tasks.filter((t) => param(t, 'task') === task && param(t, 'jobs').split(' ').includes(job.id));
        expect(found.length, `${job.id} ${task}`).toBe(1);
        return found[0]!;
      };
      for (const t of graph) {
        const node = nodeOf(t.id);
        expect([...(node.dependencies ?? [])].sort()).toEqual(t.deps.map((d) => nodeOf(d).name).sort());
        // a node serves two jobs only where their task is the same: where plan knows both keys, they agree
        if (t.key) {
          if (keys.has(node.name)) expect(keys.get(node.name), node.name).toBe(t.key);
          keys.set(node.name, t.key);
        }
      }
    }
    // three jobs of seven tasks: the rootfs and the kernel source are common to all three, the
    // image (made from the rootfs alone) to the two ext4 jobs, the kernel to the two minimal ones
    const count = (task: string) => tasks.filter((t) => param(t, 'task') === task).length;
    expect(['kernel-source', 'rootfs', 'image', 'kernel-build', 'sbom'].map(count)).toEqual([1, 1, 2, 2, 3]);
    expect(tasks).toHaveLength(1 + 1 + 2 + 2 * 3 + 3);
    expect(r.stdout).toContain('exec gpu-guest build --progress plain --cache-dir /var/cache/gpu-guest --only {{inputs.parameters.task}} {{inputs.parameters.args}}');
  });

  it('refuses what it cannot make into jobs, each with a one-line error and exit 2', async () => {
    const dir = testDir();
    const file = matrixPipeline(dir);
    // Argo would expand {{…}} in a parameter: a path holding one cannot go into a workflow
    mkdirSync(join(dir, 'a{{b}}'));
    const braced = join(dir, 'a{{b}}', 'nightly.yaml');
    writeFileSync(braced, readFileSync(file, 'utf8').replace('./linux-6.1.192.tar.xz', join(dir, 'linux-6.1.192.tar.xz')));
    const cases: [string[], RegExp][] = [
      [['matrix'], /E_USAGE: matrix: name the pipelines: --vendor NAME or --pipeline FILE/],
      [['matrix', '--vendor', 'intel', '--vendor', 'intel'], /E_USAGE: matrix: pipeline intel is named twice/],
      [['matrix', '--pipeline', file, '--format', 'argo', '--remote-cache', 'https://c.example'], /E_USAGE: matrix --format argo: give --image IMAGE/],
      [['matrix', '--pipeline', file, '--format', 'argo', '--image', 'i'], /E_USAGE: matrix --format argo: give --remote-cache URL \(or GPU_GUEST_REMOTE_CACHE\)/],
      [['matrix', '--pipeline', file, '--format', 'argo', '--image', 'i', '--remote-cache', 'https://u:secret@c.example'], /E_USAGE: --remote-cache https:\/\/\*\*\*@c\.example\/?: a credential in the URL would be written into the workflow/],
      [['matrix', '--pipeline', file, '--format', 'argo', '--image', 'i', '--remote-cache', 'https://c.example', '--remote-cache-secret', 'Bad_Name'], /E_USAGE: --remote-cache-secret Bad_Name: expected a Kubernetes object name/],
      [['matrix', '--pipeline', braced, '--format', 'argo', '--image', 'i', '--remote-cache', 'https://c.example'], /E_USAGE: matrix --format argo: .*a\{\{b\}\}.* holds "\{\{", which Argo would expand as a template expression/],
      [['matrix', '--pipeline', file, '--format', 'yaml'], /argument 'yaml' is invalid/],
      [['matrix', '--pipeline', file, '--set', 'kernel.profile=huge'], /E_PIPELINE_INVALID: .*kernel\.profile: expected one of kata, minimal, found string "huge"/],
    ];
    for (const [args, message] of cases) {
      const r = await run(cliBin, args);
      expect([r.code, r.stdout], args.join(' ')).toEqual([2, '']);
      expect(r.stderr, args.join(' ')).toMatch(message);
      expect(r.stderr.trim().split('\n').length, args.join(' ')).toBeLessThanOrEqual(2);
    }
    // a combination whose inputs plan would refuse (the fragment's local version) fails here, named
    writeFileSync(file, readFileSync(file, 'utf8').replace('  image.format: [ext4, erofs]\n', '  image.format: [ext4, erofs]\n  kernel.localVersion: ["-intel-gpu", "-intel-next"]\n'));
    const conflict = await run(cliBin, ['matrix', '--pipeline', file]);
    expect(conflict.code).toBe(2);
    expect(conflict.stderr).toMatch(/E_FRAGMENT_CONFLICT: matrix combination nightly \(kernel\.profile=minimal, image\.format=ext4, kernel\.localVersion=-intel-next\): intel\.conf:4: CONFIG_LOCALVERSION="-intel-gpu" disagrees with kernel\.localVersion -intel-next/);
    writeFileSync(file, readFileSync(file, 'utf8').replace('  kernel.localVersion: ["-intel-gpu", "-intel-next"]\n', ''));
    // a combination that the pipeline's own checks refuse is named
    writeFileSync(file, readFileSync(file, 'utf8').replace('  image.format: [ext4, erofs]\n', '  image.format: [ext4, erofs]\n  image.verity: [false, true]\n'));
    const combo = await run(cliBin, ['matrix', '--pipeline', file]);
    expect(combo.code).toBe(2);
    expect(combo.stderr).toMatch(/E_PIPELINE_INVALID: matrix combination nightly \(kernel\.profile=minimal, image\.format=ext4, image\.verity=true\): --set image\.verity=true: image\.verity needs image\.format: erofs/);
  });

  it('--format github refuses more jobs than GitHub runs in one matrix', async () => {
    const dir = testDir();
    const file = join(dir, 'wide.yaml');
    const margins = Array.from({ length: 300 }, (_, i) => i + 1);
    writeFileSync(file, `name: wide\nvendor: intel\nkernel:\n  version: "6.1.192"\n  profile: minimal\n  localVersion: -intel-gpu\nrootfs: { distro: debian, suite: bookworm }\nmatrix:\n  image.marginMiB: [${margins.join(', ')}]\n`);
    const r = await run(cliBin, ['matrix', '--pipeline', file]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/E_USAGE: matrix --format github: 300 jobs, but GitHub Actions runs at most 256 per matrix/);
    const json = await run(cliBin, ['matrix', '--pipeline', file, '--format', 'json']);
    expect(json.code, json.stderr).toBe(0);
  });
});
