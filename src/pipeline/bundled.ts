import { cpSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import { parseDocument, stringify } from 'yaml';
import { loadPipeline, visitLocalPaths } from './load.js';
import { applyOverride, formatKeyPath, parseOverride } from './overrides.js';
import type { Pipeline } from './types.js';

/** Where a bundle keeps the pipeline it was fetched for: `pipeline/<file>`, its local inputs in `pipeline/files/`. */
export const BUNDLED_PIPELINE_DIR = 'pipeline';

/**
 * The pipeline as `fetch --bundle` loaded it (the file with its --set values and --fragment files),
 * written into `<stage>/pipeline/` with every local input it names copied beside it (fragments,
 * patches, keyrings, the signing certificate, local tarballs and .run files, toolkit .debs) and
 * its paths pointing at the copies, so a machine without the network builds it from the bundle
 * alone. A module signing key is never copied: the bundled pipeline names it where it was, and
 * the build machine gives its own (--set kernel.moduleSigning.key=…). Returns the pipeline's path
 * in the bundle and what the user must know.
 */
export function writeBundledPipeline(stage: string, o: { file: string; sets: string[]; fragments: string[] }): { path: string; notes: string[] } {
  const raw = parseDocument(readFileSync(o.file, 'utf8')).toJS({ maxAliasCount: 100 }) as Record<string, unknown>;
  for (const set of o.sets) applyOverride(raw, parseOverride(set));
  // where each path really is: the loader resolves them as a build does
  const resolved = new Map<string, string>();
  visitLocalPaths(loadPipeline({ file: o.file, sets: o.sets }).pipeline, (value, path) => (resolved.set(formatKeyPath(path), value), value));
  const dir = join(stage, BUNDLED_PIPELINE_DIR);
  mkdirSync(join(dir, 'files'), { recursive: true });
  let n = 0;
  const copy = (file: string): string => {
    // a folder of its own keeps the file's name, which keys name inputs by
    const name = `${String(++n).padStart(2, '0')}/${basename(file)}`;
    mkdirSync(join(dir, 'files', String(n).padStart(2, '0')));
    // a folder (toolkit.debs, vgpu.dockerfileDir, a fragment folder) is copied whole, links followed
    cpSync(file, join(dir, 'files', name), { recursive: true, dereference: true });
    return `./files/${name}`;
  };
  const notes: string[] = [];
  visitLocalPaths(raw as unknown as Pipeline, (value, path) => {
    const key = formatKeyPath(path);
    const abs = resolved.get(key);
    if (!abs) return value;
    if (key === 'kernel.moduleSigning.key') {
      notes.push(`kernel.moduleSigning.key (${abs}) is not in the bundle, a private key never is: on the build machine give it with --set kernel.moduleSigning.key=FILE`);
      return abs;
    }
    return copy(abs);
  });
  if (o.fragments.length) {
    const kernel = (raw.kernel ??= {}) as { fragments?: string[] };
    kernel.fragments = [...(kernel.fragments ?? []), ...o.fragments.map((f) => copy(f))];
  }
  const path = `${BUNDLED_PIPELINE_DIR}/${basename(o.file)}`;
  writeFileSync(join(stage, path), `# written by gpu-guest fetch --bundle from ${o.file}${o.sets.length ? ` with --set ${o.sets.join(' --set ')}` : ''}${o.fragments.length ? ' and its --fragment files' : ''}\n# paths name the copies in files/ beside it\n${stringify(raw)}`);
  return { path, notes };
}

/** The bundled pipeline's path among a bundle's files (bundle.json's paths), if it carries one. */
export function bundledPipelinePath(paths: string[]): string | undefined {
  return paths.find((p) => p.startsWith(`${BUNDLED_PIPELINE_DIR}/`) && !p.startsWith(`${BUNDLED_PIPELINE_DIR}/files/`) && /\.ya?ml$/.test(p));
}

