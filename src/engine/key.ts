import { GuestError } from '../model/errors.js';
import { canonicalJson, sha256Hex, type Json, type JsonObject } from '../model/json.js';
import type { AnyStep, CutoffRole } from '../model/step.js';
import type { KeyMaterial } from '../model/task.js';

export function taskKey(material: KeyMaterial): string {
  return sha256Hex(canonicalJson(material as unknown as Json));
}

/** Why two key materials differ, in the words `plan` prints. */
export function describeChange(before: KeyMaterial, after: KeyMaterial): string[] {
  const reasons: string[] = [];
  if (before.kind !== after.kind || before.stepVersion !== after.stepVersion) {
    reasons.push(`step ${after.kind} changed (version ${before.stepVersion} → ${after.stepVersion})`);
  }
  for (const k of unionKeys(before.params, after.params)) {
    if (canonicalJson(before.params[k] ?? null) !== canonicalJson(after.params[k] ?? null)) reasons.push(`parameter ${k} changed`);
  }
  for (const k of unionKeys(before.inputs, after.inputs)) {
    if (canonicalJson(before.inputs[k] ?? null) !== canonicalJson(after.inputs[k] ?? null)) reasons.push(`input file ${k} changed`);
  }
  for (const role of unionKeys(before.upstream ?? {}, after.upstream ?? {})) {
    const was = before.upstream?.[role];
    const now = after.upstream[role];
    if (was?.digest === now?.digest) continue;
    reasons.push(now?.by === 'output' && was?.by === 'output' ? `the output of ${now.task} changed` : `upstream ${now?.task ?? was?.task ?? role} changed`);
  }
  return reasons;
}

function unionKeys(a: object, b: object): string[] {
  return [...new Set([...Object.keys(a), ...Object.keys(b)])].sort();
}

/** How a step reads an upstream role for early cutoff, or undefined when that role is keyed by key. */
export function cutoffRole(step: AnyStep, role: string): CutoffRole | undefined {
  return step.cutoff?.[role] ?? step.cutoff?.['*'];
}

/**
 * The identity of what an upstream produced, as far as a step reads it (early cutoff): the digests
 * of the output files it reads (all when the role names none), and the upstream's result if it
 * reads that too.
 */
export function outputIdentity(task: string, meta: { outputs: { [path: string]: string }; result: JsonObject }, read: CutoffRole): string {
  const files: { [path: string]: string } = {};
  for (const path of read.files ?? Object.keys(meta.outputs)) {
    const digest = meta.outputs[path];
    if (digest === undefined) throw new GuestError('E_STEP_FAILED', `early cutoff reads ${path} of ${task}, which that task did not produce (a gpu-guest bug: report it)`);
    files[path] = digest;
  }
  return sha256Hex(canonicalJson({ files, ...(read.result ? { result: meta.result } : {}) } as Json));
}
