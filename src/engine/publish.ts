import { copyFileSync, linkSync, lstatSync, mkdirSync, readdirSync, readlinkSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import type { StepRegistry } from '../model/step.js';
import type { Plan } from './plan.js';
import type { RunOutcome } from './run.js';
import { listEntries } from './tree.js';
import type { Json } from '../model/json.js';
import { redactJson } from '../model/redact.js';

/**
 * Lays the outputs of finished tasks out under out/<pipeline>/<folder>/ (hard links into the cache
 * where the file system allows, copies elsewhere) and writes manifest.json describing them.
 */
export function publishOutputs(plan: Plan, outcome: RunOutcome, steps: StepRegistry, pipelineOut: string): void {
  const manifest: { pipeline: string; tasks: object[] } = { pipeline: plan.pipeline, tasks: [] };
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
        if (entry.meta.outputs[rel]) files[step.publish === '.' ? rel : `${step.publish}/${rel}`] = entry.meta.outputs[rel]!;
      }
    }
    manifest.tasks.push({ id: t.id, kind: t.kind, key: t.key, params: t.params, inputs: t.inputs, result: entry.meta.result, files });
  }
  mkdirSync(pipelineOut, { recursive: true });
  writeFileSync(join(pipelineOut, 'manifest.json'), `${JSON.stringify(redactJson(manifest as unknown as Json), null, 2)}\n`);
}

function placeEntry(from: string, to: string): void {
  mkdirSync(dirname(to), { recursive: true });
  const st = lstatSync(from);
  if (st.isSymbolicLink()) {
    symlinkSync(readlinkSync(from), to);
    return;
  }
  try {
    linkSync(from, to);
  } catch {
    copyFileSync(from, to);
  }
}
