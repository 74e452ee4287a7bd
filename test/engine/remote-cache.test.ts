import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { spawn } from 'node:child_process';
import { parse as parseYaml } from 'yaml';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execGraph, harness, run, sharedCacheDir, suiteDir, testDir } from '../helpers.js';
import { startWebDav, type WebDav } from '../fixtures/webdav.js';

/** Two runners: separate cache and out folders, one counter of the tasks that really ran. */
function runners(tasks: (counter: string) => Parameters<typeof execGraph>[1]) {
  const dir = testDir();
  const counter = join(dir, 'ran');
  const graph = tasks(counter);
  const argsFor = (name: string) => execGraph(join(dir), graph).map((a) => (a.endsWith('/cache') ? join(dir, `${name}-cache`) : a.endsWith('/out') ? join(dir, `${name}-out`) : a));
  const ran = () => (existsSync(counter) ? readFileSync(counter, 'utf8').split('\n').filter(Boolean) : []);
  return { dir, argsFor, ran };
}

const graph = (counter: string) => [
  { id: 'kernel', script: `echo kernel >> ${counter}; head -c 300000 /dev/urandom > vmlinuz; mkdir -p build; echo obj > build/a.o` },
  { id: 'image', deps: ['kernel'], script: `echo image >> ${counter}; cat "$UP_kernel/vmlinuz" | sha256sum > image.txt` },
];

describe('remote cache (nginx WebDAV on 127.0.0.1)', () => {
  let dav: WebDav;
  beforeAll(async () => {
    dav = await startWebDav(sharedCacheDir(), suiteDir('gpu-guest-webdav-'));
  }, 120_000);
  afterAll(async () => dav?.close());

  it('a second runner with an empty cache downloads what the first built and runs nothing', async () => {
    const r = runners(graph);
    const first = await run(harness, ['build', ...r.argsFor('a'), '--remote-cache', `${dav.origin}/cache/`]);
    expect(first.code, first.stderr).toBe(0);
    expect(first.stderr).toContain('uploaded 2 cache entries to the remote cache');
    expect(readdirSync(join(dav.root, 'cache/ac'))).toHaveLength(2);
    expect(readdirSync(join(dav.root, 'cache/cas')).every((f) => /^[0-9a-f]{64}\.tar$/.test(f))).toBe(true);
    const second = await run(harness, ['build', ...r.argsFor('b'), '--remote-cache', `${dav.origin}/cache/`]);
    expect(second.code, second.stderr).toBe(0);
    expect(second.stdout).toMatch(/0 to run/);
    expect(r.ran()).toEqual(['kernel', 'image']);
    expect(readFileSync(join(r.dir, 'b-out/demo/exec/image.txt'), 'utf8')).toBe(readFileSync(join(r.dir, 'a-out/demo/exec/image.txt'), 'utf8'));
    // with the log of the run that made it
    const manifest = JSON.parse(readFileSync(join(r.dir, 'b-out/demo/manifest.json'), 'utf8'));
    expect(readFileSync(join(r.dir, 'b-cache/entries', manifest.tasks[0].key, 'log.txt'), 'utf8')).toContain('echo kernel >>');
    // the downloaded entries are local now: a third build needs no server
    const third = await run(harness, ['build', ...r.argsFor('b')]);
    expect(third.stdout).toMatch(/0 to run/);
  });

  it('runs the Argo DAG of a matrix as Argo would, each node in an empty cache of its own: every shared task once, the jobs complete', async () => {
    const dir = testDir();
    const counter = join(dir, 'ran');
    const [, file] = execGraph(
      dir,
      [
        { id: 'source', script: `echo source >> ${counter}; echo src > src.txt` },
        { id: 'build', deps: ['source'], uses: ['flavour'], script: `echo build-$VAR_flavour >> ${counter}; cat "$UP_source/src.txt" > b.txt; echo $VAR_flavour >> b.txt` },
        { id: 'image', deps: ['build'], script: `echo image >> ${counter}; cat "$UP_build/b.txt" > image.txt` },
      ],
      'demo',
      [{ flavour: 'a' }, { flavour: 'b' }],
    );
    const url = `${dav.origin}/dag/`;
    const printed = await run(harness, ['matrix', '--pipeline', file!, '--format', 'argo', '--image', 'gpu-guest:test', '--remote-cache', url]);
    expect(printed.code, printed.stderr).toBe(0);
    type Param = { name: string; value: string };
    const workflow = parseYaml(printed.stdout) as { spec: { templates: { name: string; dag?: { tasks: { name: string; dependencies?: string[]; arguments: { parameters: Param[] } }[] }; container?: { args: string[]; env: { name: string; value?: string }[] } }[] } };
    const nodes = workflow.spec.templates.find((t) => t.dag)!.dag!.tasks;
    const container = workflow.spec.templates.find((t) => t.container)!.container!;
    // a pod: the template's own command line with the node's parameters, gpu-guest being the harness
    const runPod = (node: (typeof nodes)[number]) => {
      const param = (name: string) => node.arguments.parameters.find((p) => p.name === name)!.value;
      const line = container.args[0]!
        .replace('exec gpu-guest ', `exec ${process.execPath} ${harness} `)
        .replace('/var/cache/gpu-guest', join(dir, `pod-${node.name}`))
        .replace('{{inputs.parameters.task}}', param('task'))
        .replace('{{inputs.parameters.args}}', param('args'));
      const env = Object.fromEntries(container.env.filter((e) => e.value !== undefined).map((e) => [e.name, e.value!]));
      return new Promise<{ code: number | null; output: string }>((resolveRun) => {
        const child = spawn('sh', ['-c', line], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
        let output = '';
        child.stdout.on('data', (d: Buffer) => (output += d.toString()));
        child.stderr.on('data', (d: Buffer) => (output += d.toString()));
        child.on('close', (code) => resolveRun({ code, output }));
      });
    };
    // Argo's DAG: a node starts once its dependencies succeeded; ready nodes run side by side
    const done = new Set<string>();
    while (done.size < nodes.length) {
      const ready = nodes.filter((n) => !done.has(n.name) && (n.dependencies ?? []).every((d) => done.has(d)));
      expect(ready.length, `no node is ready; done: ${[...done].join(', ')}`).toBeGreaterThan(0);
      const results = await Promise.all(ready.map(runPod));
      results.forEach((r, i) => expect(r.code, `${ready[i]!.name}:\n${r.output}`).toBe(0));
      for (const n of ready) done.add(n.name);
    }
    expect(nodes).toHaveLength(5);
    expect(readFileSync(counter, 'utf8').split('\n').filter(Boolean).sort()).toEqual(['build-a', 'build-b', 'image', 'image', 'source']);
    // each job's own build, anywhere that reaches the cache, runs nothing and lays its outputs out
    const jobs = JSON.parse((await run(harness, ['matrix', '--pipeline', file!, '--format', 'json'])).stdout) as { jobs: { id: string; args: string[] }[] };
    for (const job of jobs.jobs) {
      const out = join(dir, `out-${job.id}`);
      const fetched = await run(harness, ['build', ...job.args, '--cache-dir', join(dir, `fetch-${job.id}`), '--out-dir', out, '--remote-cache', url]);
      expect(fetched.code, fetched.stderr).toBe(0);
      expect(fetched.stdout).toMatch(/0 to run/);
      expect(readFileSync(join(out, 'demo/exec/image.txt'), 'utf8')).toBe(`src\n${job.id.endsWith('-a') ? 'a' : 'b'}\n`);
    }
  });

  it('read mode downloads but never uploads', async () => {
    const r = runners(graph);
    const build = await run(harness, ['build', ...r.argsFor('a'), '--remote-cache', `${dav.origin}/read-only/`, '--remote-cache-mode', 'read']);
    expect(build.code, build.stderr).toBe(0);
    expect(existsSync(join(dav.root, 'read-only'))).toBe(false);
  });

  it('rejects a tampered or truncated object by its digest, with a warning, and builds the task instead', async () => {
    const r = runners(graph);
    const first = await run(harness, ['build', ...r.argsFor('a'), '--remote-cache', `${dav.origin}/tamper/`]);
    expect(first.code, first.stderr).toBe(0);
    const kernelKey = JSON.parse(readFileSync(join(r.dir, 'a-out/demo/manifest.json'), 'utf8')).tasks.find((t: { id: string }) => t.id === 'kernel').key;
    const record = JSON.parse(readFileSync(join(dav.root, 'tamper/ac', `${kernelKey}.json`), 'utf8'));
    const object = join(dav.root, 'tamper/cas', `${record.sha256}.tar`);
    const bytes = readFileSync(object);
    bytes[bytes.length >> 1] ^= 0xff;
    writeFileSync(object, bytes);
    const second = await run(harness, ['build', ...r.argsFor('b'), '--remote-cache', `${dav.origin}/tamper/`]);
    expect(second.code, second.stderr).toBe(0);
    expect(second.stderr).toMatch(new RegExp(`^warning: the remote cache's object for ${kernelKey.slice(0, 12)} is corrupt or truncated`, 'm'));
    // the kernel ran again here; the image, whose object is sound, came from the remote
    expect(r.ran()).toEqual(['kernel', 'image', 'kernel']);
  });

  it('a server that is down is one warning, and the build goes on locally', async () => {
    const r = runners(graph);
    const build = await run(harness, ['build', ...r.argsFor('a'), '--remote-cache', 'http://127.0.0.1:9/cache']);
    expect(build.code, build.stderr).toBe(0);
    expect(build.stderr.match(/^warning: /gm)).toHaveLength(1);
    expect(build.stderr).toMatch(/^warning: the remote cache http:\/\/127\.0\.0\.1:9\/cache cannot be reached \(ECONNREFUSED\): this build uses the local cache only$/m);
    expect(r.ran()).toEqual(['kernel', 'image']);
  });

  it('an upload the server refuses (500) is a warning; the build succeeds', async () => {
    const r = runners(graph);
    const build = await run(harness, ['build', ...r.argsFor('a'), '--remote-cache', `${dav.origin}/put-fails/`]);
    expect(build.code, build.stderr).toBe(0);
    expect(build.stderr).toMatch(/^warning: could not upload kernel \([0-9a-f]{12}\) to the remote cache; the build goes on: HTTP 500 for PUT cas\//m);
    expect(build.stderr).not.toContain('uploaded');
  });

  it('sends the bearer token from the environment and never prints it', async () => {
    const r = runners(graph);
    const env = { GPU_GUEST_REMOTE_CACHE: `${dav.origin}/token/`, GPU_GUEST_REMOTE_CACHE_TOKEN: dav.token };
    const first = await run(harness, ['build', ...r.argsFor('a')], { env });
    expect(first.code, first.stderr).toBe(0);
    expect(first.stderr).toContain('uploaded 2 cache entries');
    const second = await run(harness, ['build', ...r.argsFor('b')], { env });
    expect(second.stdout).toMatch(/0 to run/);
    const wrong = await run(harness, ['build', ...r.argsFor('c')], { env: { ...env, GPU_GUEST_REMOTE_CACHE_TOKEN: 'wrong' } });
    expect(wrong.code, wrong.stderr).toBe(0);
    expect(wrong.stderr).toMatch(/HTTP 401/);
    for (const text of [first.stdout, first.stderr, second.stdout, second.stderr, wrong.stdout, wrong.stderr, readFileSync(join(r.dir, 'a-out/demo/logs/events.jsonl'), 'utf8')]) expect(text).not.toContain(dav.token);
  });

  it('gives up on a server that accepts and never answers, within GPU_GUEST_REMOTE_CACHE_TIMEOUT', async () => {
    const silent: Server = createServer(() => undefined);
    await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve));
    try {
      const r = runners(graph);
      const url = `http://127.0.0.1:${(silent.address() as { port: number }).port}/cache`;
      const build = await run(harness, ['build', ...r.argsFor('a'), '--remote-cache', url], { env: { GPU_GUEST_REMOTE_CACHE_TIMEOUT: '1' } });
      expect(build.code, build.stderr).toBe(0);
      expect(build.stderr).toMatch(/^warning: the remote cache http:\/\/127\.0\.0\.1:\d+\/cache cannot be reached \(ETIMEDOUT\)/m);
      expect(r.ran()).toEqual(['kernel', 'image']);
    } finally {
      silent.close();
    }
  });

  it('refuses a remote cache that is no http(s) URL, and an unknown mode (exit 2)', async () => {
    const r = runners(graph);
    const bad = await run(harness, ['build', ...r.argsFor('a'), '--remote-cache', 'ftp://cache.example/x']);
    expect([bad.code, bad.stderr.trim()]).toEqual([2, 'error: E_USAGE: --remote-cache ftp://cache.example/x: expected an http:// or https:// URL']);
    const mode = await run(harness, ['build', ...r.argsFor('a'), '--remote-cache', dav.origin, '--remote-cache-mode', 'write']);
    expect([mode.code, mode.stderr.trim()]).toEqual([2, 'error: E_USAGE: --remote-cache-mode write: expected read or readwrite']);
    expect(r.ran()).toEqual([]);
  });
});
