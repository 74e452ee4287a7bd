import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { compileTaskGraph } from '../../src/pipeline/compile.js';
import { loadPipeline } from '../../src/pipeline/load.js';
import { ancestorsOf, descendantsOf, topoOrder } from '../../src/engine/graph.js';
import { describeChange, taskKey } from '../../src/engine/key.js';
import { canonicalJson } from '../../src/model/json.js';
import { GuestError } from '../../src/model/errors.js';
import { taskDeps } from '../../src/model/task.js';
import { driverModules } from '../../src/steps/nvidia/driver-modules.js';
import { installerModules } from '../../src/steps/nvidia/installer-modules.js';
import { testDir } from '../helpers.js';

const SHA = 'b'.repeat(64);
const nvidia = () => compileTaskGraph(loadPipeline({ vendor: 'nvidia', sets: [`driver.sha256=${SHA}`] }).pipeline);
const intel = () => compileTaskGraph(loadPipeline({ vendor: 'intel' }).pipeline);
const deps = (g: ReturnType<typeof nvidia>) => Object.fromEntries(g.tasks.map((t) => [t.id, taskDeps(t)]));

describe('compileTaskGraph', () => {
  it('gives the nvidia pipeline exactly its eleven tasks and their dependencies', () => {
    const g = nvidia();
    expect(g.tasks.map((t) => t.id)).toEqual(['kernel-source', 'kernel-config', 'kernel-build', 'kernel-debs', 'rootfs', 'build-root', 'driver-modules', 'driver', 'toolkit', 'image', 'sbom']);
    expect(deps(g)).toEqual({
      'kernel-source': [],
      'kernel-config': ['kernel-source'],
      'kernel-build': ['kernel-source', 'kernel-config'],
      // packaging reads the source again, at the same stable path as the build (kernelTreePaths)
      'kernel-debs': ['kernel-source', 'kernel-build'],
      rootfs: [],
      'build-root': [],
      // nvidia-installer builds the modules in the build root, never in the guest's rootfs
      'driver-modules': ['kernel-debs', 'build-root'],
      driver: ['kernel-debs', 'rootfs', 'driver-modules'],
      toolkit: ['driver'],
      image: ['toolkit'],
      // the SBOM reads the image, the rootfs it was made from, the kernel and the driver's results
      sbom: ['image', 'toolkit', 'rootfs', 'kernel-debs', 'kernel-source', 'driver'],
    });
    expect(g.tasks.find((t) => t.id === 'driver-modules')!.kind).toBe('installer-modules');
    // what NVIDIA's modules need of the kernel is checked once the .config is final
    expect(g.tasks.find((t) => t.id === 'kernel-config')!.params.driverNeeds).toEqual(expect.arrayContaining([expect.objectContaining({ symbol: 'X86_PAT' }), expect.objectContaining({ symbol: 'MMU_NOTIFIER' })]));
  });

  it('with driver.source: run, the guest\'s own packages are not part of the module build (the build root has only the build-only ones)', () => {
    const withPackages = (packages: string, extra = '[gcc, make]') => compileTaskGraph(loadPipeline({ vendor: 'nvidia', sets: [`driver.sha256=${SHA}`, `rootfs.packages=${packages}`, `rootfs.extraPackages=${extra}`, 'driver.patches=[]'] }).pipeline);
    const task = (g: ReturnType<typeof nvidia>, id: string) => g.tasks.find((t) => t.id === id)!;
    const a = withPackages('[]');
    const b = withPackages('[jq, curl]');
    expect(task(a, 'build-root').params).toMatchObject({ packages: [], extraPackages: ['gcc', 'make'], suite: 'bookworm' });
    expect(task(b, 'rootfs').params.packages).toEqual(['jq', 'curl']);
    expect(task(b, 'build-root')).toEqual(task(a, 'build-root'));
    expect(task(b, 'driver-modules')).toEqual(task(a, 'driver-modules'));
    // the build-only packages are what the modules are built with: they change the build root
    expect(task(withPackages('[]', '[gcc, make, libelf1]'), 'build-root').params.extraPackages).toEqual(['gcc', 'make', 'libelf1']);
    // the .run's pinned sha256 is its identity: another URL is the same build
    const url = (u: string) => compileTaskGraph(loadPipeline({ vendor: 'nvidia', sets: [`driver.sha256=${SHA}`, `driver.url=${u}`] }).pipeline).tasks.find((t) => t.id === 'driver-modules')!;
    expect(installerModules.identity!(url('https://a.example/x/NVIDIA-Linux-x86_64-550.127.05.run').params as never)).toEqual(installerModules.identity!(url('https://b.example/y/NVIDIA-Linux-x86_64-550.127.05.run').params as never));
  });

  it('with driver.source: source, builds the modules on the kernel tree alone, beside the rootfs', () => {
    const mirrors = (m: string) => compileTaskGraph(loadPipeline({ vendor: 'nvidia', sets: [`driver.sha256=${SHA}`, 'driver.source=source', `driver.moduleSource.mirrors=[${m}]`, `driver.moduleSource.sha256=${'d'.repeat(64)}`] }).pipeline);
    const g = mirrors('https://a.example/nvidia');
    expect(deps(g)['driver-modules']).toEqual(['kernel-source', 'kernel-build']);
    expect(deps(g).driver).toEqual(['kernel-debs', 'rootfs', 'driver-modules']);
    const modules = g.tasks.find((t) => t.id === 'driver-modules')!;
    expect(modules.params.tarball).toEqual({ urls: ['https://a.example/nvidia/NVIDIA-kernel-module-source-550.127.05.tar.xz'], sha256: 'd'.repeat(64) });
    // the pinned sha256s are the identity: another mirror is the same build
    const other = mirrors('https://b.example/nvidia').tasks.find((t) => t.id === 'driver-modules')!;
    expect(driverModules.identity!(other.params as never)).toEqual(driverModules.identity!(modules.params as never));
    // without moduleSource the .run's own tree is built, and the driver task keeps no patches of its own
    const fromRun = compileTaskGraph(loadPipeline({ vendor: 'nvidia', sets: [`driver.sha256=${SHA}`, 'driver.source=source'] }).pipeline);
    expect(fromRun.tasks.find((t) => t.id === 'driver-modules')!.params.tarball).toBeNull();
    expect(fromRun.tasks.find((t) => t.id === 'driver')!.params.source).toBe('source');
  });

  it('with driver.source: apt, the driver task is driver-packages on the debs and the rootfs, keyed by the pins and the keyring', () => {
    const pins = ['nvidia-kernel-dkms=550.127.05-1', 'nvidia-smi=550.127.05-1'];
    const key = join(testDir(), 'cuda.gpg');
    writeFileSync(key, 'key one');
    const apt = (extra: string[] = []) => compileTaskGraph(loadPipeline({ vendor: 'nvidia', sets: ['driver.source=apt', `driver.packages=[${pins.join(', ')}]`, ...extra] }).pipeline);
    const g = apt();
    const driver = g.tasks.find((t) => t.id === 'driver')!;
    expect(driver.kind).toBe('driver-packages');
    expect(deps(g).driver).toEqual(['kernel-debs', 'rootfs']);
    expect(driver.params).toMatchObject({ version: '550.127.05', packages: pins, repository: null });
    const named = apt([`driver.repository={url: "https://repo.example/cuda", suite: "/", components: [], key: "${key}"}`]).tasks.find((t) => t.id === 'driver')!;
    expect(named.params.repository).toEqual({ url: 'https://repo.example/cuda', suite: '/', components: [] });
    expect(named.files.repositoryKey).toBe(key);
  });

  it('gives the intel pipeline seven tasks, the image right after the rootfs', () => {
    const g = intel();
    expect(g.tasks.map((t) => t.id)).toEqual(['kernel-source', 'kernel-config', 'kernel-build', 'kernel-debs', 'rootfs', 'image', 'sbom']);
    expect(deps(g).image).toEqual(['rootfs']);
    expect(deps(g).sbom).toEqual(['image', 'rootfs', 'kernel-debs', 'kernel-source']);
    // no NVIDIA driver, nothing it needs of the kernel
    expect(g.tasks.find((t) => t.id === 'kernel-config')!.params.driverNeeds).toBeUndefined();
    expect(ancestorsOf(g, 'rootfs')).toEqual(new Set(['rootfs']));
  });

  it('keeps machine paths out of params and puts them in files', () => {
    for (const t of nvidia().tasks) expect(canonicalJson(t.params)).not.toMatch(/"\/(root|tmp|work|home)/);
  });
});

describe('graph', () => {
  const graph = (edges: Record<string, string[]>) => ({ pipeline: 'g', tasks: Object.entries(edges).map(([id, d]) => ({ id, kind: 'x', upstream: Object.fromEntries(d.map((x) => [x, x])), params: {}, files: {}, title: id })) });
  const cases: [string, Record<string, string[]>, string | null][] = [
    ['a chain', { a: [], b: ['a'], c: ['b'] }, null],
    ['a diamond', { a: [], b: ['a'], c: ['a'], d: ['b', 'c'] }, null],
    ['a self loop', { a: ['a'] }, 'a → a'],
    ['a three-task cycle', { a: ['c'], b: ['a'], c: ['b'] }, 'a → c → b → a'],
  ];
  it.each(cases)('orders %s or reports its cycle', (_, edges, cycle) => {
    if (cycle === null) {
      const order = topoOrder(graph(edges)).map((t) => t.id);
      for (const [id, d] of Object.entries(edges)) for (const dep of d) expect(order.indexOf(dep)).toBeLessThan(order.indexOf(id));
    } else {
      let err: unknown;
      try {
        topoOrder(graph(edges));
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(GuestError);
      expect((err as GuestError).code).toBe('E_CYCLE');
      expect((err as GuestError).message).toContain(cycle);
    }
  });
  it('finds what depends on a task', () => {
    expect(descendantsOf(graph({ a: [], b: ['a'], c: ['b'], d: [] }), 'b')).toEqual(new Set(['b', 'c']));
  });
});

describe('keys', () => {
  const material = { kind: 'k', stepVersion: 1, params: { a: 1, b: [1, 2], c: { x: 'y', w: null } }, inputs: {}, upstream: { up: { task: 'up', by: 'key' as const, digest: 'f'.repeat(64) } } };
  it('do not depend on key order', () => {
    const reordered = { upstream: material.upstream, inputs: {}, params: { c: { w: null, x: 'y' }, b: [1, 2], a: 1 }, stepVersion: 1, kind: 'k' };
    expect(taskKey(reordered)).toBe(taskKey(material));
  });
  const changes: [string, object, string][] = [
    ['a parameter', { params: { ...material.params, a: 2 } }, 'parameter a changed'],
    ['an upstream key', { upstream: { up: { task: 'up', by: 'key' as const, digest: 'e'.repeat(64) } } }, 'upstream up changed'],
    ['an input file', { inputs: { fragments: [{ name: 'x.conf', sha256: '1' }] } }, 'input file fragments changed'],
    ['the step version', { stepVersion: 2 }, 'step k changed (version 1 → 2)'],
  ];
  it.each(changes)('change with %s, and say why', (_, change, reason) => {
    const next = { ...material, ...change };
    expect(taskKey(next)).not.toBe(taskKey(material));
    expect(describeChange(material, next)).toEqual([reason]);
  });

  it('are the same for the same pipeline whatever the YAML key order', () => {
    const dir = testDir();
    const a = `name: k\nvendor: intel\nkernel:\n  version: "6.1"\n  baseConfig: kernel-configs/base/minimal/x86_64.conf\n  localVersion: -intel-gpu\nrootfs:\n  distro: debian\n  suite: bookworm\n  components: [main, contrib]\n`;
    const b = `rootfs:\n  components: [main, contrib]\n  suite: bookworm\n  distro: debian\nkernel:\n  localVersion: -intel-gpu\n  baseConfig: kernel-configs/base/minimal/x86_64.conf\n  version: "6.1"\nvendor: intel\nname: k\n`;
    writeFileSync(join(dir, 'a.yaml'), a);
    writeFileSync(join(dir, 'b.yaml'), b);
    const ga = compileTaskGraph(loadPipeline({ file: join(dir, 'a.yaml') }).pipeline);
    const gb = compileTaskGraph(loadPipeline({ file: join(dir, 'b.yaml') }).pipeline);
    expect(ga).toEqual(gb);
  });
});
