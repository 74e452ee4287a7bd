import { join } from 'node:path';
import { sha256File } from '../sys/hash.js';
import { listFiles } from './digest.js';

/** sha256 of every file a task produced, except under the step's undigested prefixes. */
export async function digestOutputs(outDir: string, undigested: string[]): Promise<{ [path: string]: string }> {
  const out: { [path: string]: string } = {};
  for (const rel of listFiles(outDir)) {
    if (undigested.some((p) => rel === p || rel.startsWith(p.endsWith('/') ? p : `${p}/`))) continue;
    out[rel] = await sha256File(join(outDir, rel));
  }
  return out;
}
