import { cpSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { writeBundledPipeline } from '../../src/pipeline/bundled.js';
import { compileTaskGraph } from '../../src/pipeline/compile.js';
import { loadPipeline } from '../../src/pipeline/load.js';
import { sharedCacheDir, testDir, writePipeline } from '../helpers.js';
import { testSigningKey } from '../fixtures/signing.js';

describe('the pipeline a bundle carries', () => {
  it('is the pipeline as fetch loaded it, its local inputs copied beside it under their own names, loadable anywhere; the signing key stays out', () => {
    const dir = testDir();
    const patch = join(dir, 'fix.patch');
    writeFileSync(patch, '--- a/x\n+++ b/x\n');
    mkdirSync(join(dir, 'debs'));
    writeFileSync(join(dir, 'debs', 'a.deb'), 'deb bytes');
    const extra = join(dir, 'extra.conf');
    writeFileSync(extra, 'CONFIG_PRINTK_TIME=y\n');
    const file = writePipeline(dir, 'nvidia', '  version: "6.1.192"\n', '');
    writeFileSync(file, readFileSync(file, 'utf8').replace('driver:\n', 'driver:\n  patches: [./fix.patch]\n').replace('toolkit:\n  version: "1.17.3-1"\n', 'toolkit:\n  version: "1.17.3-1"\n  debs: [./debs]\n'));
    const stage = join(dir, 'stage');
    const carried = writeBundledPipeline(stage, { file, sets: ['rootfs.packages=[jq]'], fragments: [extra] });
    expect(carried.path).toBe('pipeline/nvidia-test.yaml');
    const signing = testSigningKey(sharedCacheDir());
    expect(carried.notes).toEqual([`kernel.moduleSigning.key (${signing.key}) is not in the bundle, a private key never is: on the build machine give it with --set kernel.moduleSigning.key=FILE`]);

    // unpacked elsewhere, as on the machine without a network: the original folder is not needed
    const elsewhere = join(testDir(), 'unpacked');
    cpSync(stage, elsewhere, { recursive: true });
    const text = readFileSync(join(elsewhere, carried.path), 'utf8');
    expect(text).toMatch(/^# written by gpu-guest fetch --bundle from \S+nvidia-test\.yaml with --set rootfs\.packages=\[jq\] and its --fragment files$/m);
    expect(text.split('\n').filter((l) => !l.startsWith('#')).join('\n')).not.toContain(dir);
    const bundled = loadPipeline({ file: join(elsewhere, carried.path) }).pipeline;
    const original = loadPipeline({ file, sets: ['rootfs.packages=[jq]'] }).pipeline;
    expect(bundled.rootfs.packages).toEqual(['jq']);
    expect(bundled.kernel!.fragments.map((f) => f.slice(elsewhere.length))).toEqual(['/pipeline/files/01/nvidia.conf', '/pipeline/files/02/container.conf', '/pipeline/files/06/extra.conf']);
    expect(bundled.driver!.patches).toEqual([join(elsewhere, 'pipeline/files/04/fix.patch')]);
    expect(readFileSync(join(bundled.toolkit!.debs[0]!, 'a.deb'), 'utf8')).toBe('deb bytes');
    expect(bundled.kernel!.moduleSigning!.key).toBe(signing.key);
    expect(readFileSync(bundled.kernel!.moduleSigning!.certificate, 'utf8')).toBe(readFileSync(signing.certificate, 'utf8'));
    // the same inputs by content and name: every task's parameters and file names as the original's
    const strip = (g: ReturnType<typeof compileTaskGraph>) => g.tasks.map((t) => ({ id: t.id, params: t.params, files: Object.fromEntries(Object.entries(t.files).map(([k, v]) => [k, (Array.isArray(v) ? v : [v]).map((f) => f.split('/').pop())])) }));
    expect(strip(compileTaskGraph(bundled, {}))).toEqual(strip(compileTaskGraph(original, { extraFragments: [extra] })));
  });
});
