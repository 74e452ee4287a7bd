import { canonicalJson, sha256Hex, type Json } from '../model/json.js';
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
    if (was?.digest !== now?.digest) reasons.push(`upstream ${now?.task ?? was?.task ?? role} changed`);
  }
  return reasons;
}

function unionKeys(a: object, b: object): string[] {
  return [...new Set([...Object.keys(a), ...Object.keys(b)])].sort();
}
