import { existsSync, lstatSync, mkdirSync, readdirSync, readFileSync, readlinkSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { sha256File } from '../sys/hash.js';
import { linkOrCopy } from '../sys/link.js';
import { dirname, join } from 'node:path';
import type { StepRegistry } from '../model/step.js';
import type { Plan } from './plan.js';
import type { RunOutcome } from './run.js';
import { listEntries } from './tree.js';
import type { Json } from '../model/json.js';
import { redactJson } from '../model/redact.js';
import type { PublishedArtifact } from './report/run-summary.js';

/**
 * Lays the outputs of finished tasks out under out/<pipeline>/<folder>/ (hard links into the cache
 * where the file system allows, copies elsewhere) and writes manifest.json describing them.
 * Returns the published files as the manifest lists them.
 */
export function publishOutputs(plan: Plan, outcome: RunOutcome, steps: StepRegistry, pipelineOut: string, gpuGuestVersion: string, provenance: Provenance = {}): PublishedArtifact[] {
  const manifest: { pipeline: string; gpuGuest: string; tasks: object[]; artifacts: PublishedArtifact[] } & Provenance = { pipeline: plan.pipeline, gpuGuest: gpuGuestVersion, ...provenance, tasks: [], artifacts: [] };
  const sums = new Map<string, string>();
  // Several tasks may publish into one folder: clear each folder once, before placing anything.
  for (const t of plan.tasks) {
    const folder = steps.get(t.kind)?.publish;
    if (!folder) continue;
    // '.' publishes the entry's own folders (kata/, rootfs/ …) at the top of out/<pipeline>/
    const entry = outcome.entries.get(t.id);
    const names = folder === '.' ? (entry ? readdirSync(entry.outDir) : []) : [folder];
    for (const name of names) rmSync(join(pipelineOut, name), { recursive: true, force: true });
  }
  for (const t of plan.tasks) {
    const entry = outcome.entries.get(t.id);
    const step = steps.get(t.kind);
    if (!entry || !step || t.status === 'skip') continue;
    const files: Record<string, string> = {};
    if (step.publish) {
      const target = step.publish === '.' ? pipelineOut : join(pipelineOut, step.publish);
      for (const rel of listEntries(entry.outDir)) {
        if ((step.undigested ?? []).some((p) => rel === p || rel.startsWith(`${p}/`))) continue;
        placeEntry(join(entry.outDir, rel), join(target, rel));
        const published = step.publish === '.' ? rel : `${step.publish}/${rel}`;
        const digest = entry.meta.outputs[rel];
        if (!digest) continue;
        files[published] = digest;
        sums.set(published, digest);
        manifest.artifacts.push({ path: published, task: t.id, size: statSync(join(target, rel)).size, sha256: digest });
      }
    }
    const result = outcome.results.find((r) => r.id === t.id);
    manifest.tasks.push({ id: t.id, kind: t.kind, key: t.key, status: result?.status ?? 'cached', durationMs: result?.durationMs ?? 0, params: t.params, inputs: t.inputs, result: entry.meta.result, files });
  }
  mkdirSync(pipelineOut, { recursive: true });
  writeFileSync(join(pipelineOut, 'manifest.json'), `${JSON.stringify(redactJson(manifest as unknown as Json), null, 2)}\n`);
  // the format sha256sum -c reads, from out/<pipeline>/
  const lines = [...sums].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)).map(([path, digest]) => `${digest}  ${path}\n`);
  writeFileSync(join(pipelineOut, SHA256SUMS), lines.join(''));
  return manifest.artifacts;
}

export const SHA256SUMS = 'SHA256SUMS';

/** What the build was made from, for manifest.json: the pipeline file and the lock, each by sha256. */
export interface Provenance {
  pipelineFile?: { path: string; sha256: string };
  /** `--lock FILE` (path) or `--bundle FILE` (the lock it carries: bundle). */
  lock?: { sha256: string; path?: string; bundle?: string };
}

/**
 * Whether out/<pipeline>/ still holds what the build published: every SHA256SUMS line's file, with
 * that digest. Undefined when there is no SHA256SUMS (nothing was published there).
 */
export async function checkPublishedSums(pipelineOut: string): Promise<{ files: number; wrong: string[] } | undefined> {
  const file = join(pipelineOut, SHA256SUMS);
  if (!existsSync(file)) return undefined;
  const wrong: string[] = [];
  let files = 0;
  for (const line of readFileSync(file, 'utf8').split('\n').filter(Boolean)) {
    const m = /^([0-9a-f]{64}) {2}(.+)$/.exec(line);
    if (!m) {
      wrong.push(`${SHA256SUMS}: malformed line '${line.slice(0, 80)}'`);
      continue;
    }
    files++;
    const path = join(pipelineOut, m[2]!);
    if (!existsSync(path)) wrong.push(`${m[2]} is missing`);
    else if ((await sha256File(path)) !== m[1]) wrong.push(`${m[2]} differs from its sha256`);
  }
  return { files, wrong };
}

function placeEntry(from: string, to: string): void {
  mkdirSync(dirname(to), { recursive: true });
  const st = lstatSync(from);
  if (st.isSymbolicLink()) {
    symlinkSync(readlinkSync(from), to);
    return;
  }
  linkOrCopy(from, to);
}
