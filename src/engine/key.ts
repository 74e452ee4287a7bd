import { createHash } from 'node:crypto';
import type { Json } from './types.js';

/** JSON with object keys sorted at every level, so the same data always gives the same text. */
export function canonicalJson(value: Json): string {
  if (value === null || typeof value !== 'object') return JSON.stringify(value);
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(',')}]`;
  const keys = Object.keys(value).filter((k) => value[k] !== undefined).sort();
  return `{${keys.map((k) => `${JSON.stringify(k)}:${canonicalJson(value[k]!)}`).join(',')}}`;
}

export function sha256Hex(text: string | Buffer): string {
  return createHash('sha256').update(text).digest('hex');
}

/** Everything a task's key covers. Stored in the cache entry so `plan` can say what changed. */
export interface KeyMaterial {
  kind: string;
  stepVersion: number;
  params: { [key: string]: Json };
  /** Content digests of the input files, by role (file names, never machine paths). */
  inputs: { [role: string]: Json };
  /** Keys of the upstream tasks, by task id. */
  upstream: { [id: string]: string };
}

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
  for (const k of unionKeys(before.upstream, after.upstream)) {
    if (before.upstream[k] !== after.upstream[k]) reasons.push(`upstream ${k} changed`);
  }
  return reasons;
}

function unionKeys(a: object, b: object): string[] {
  return [...new Set([...Object.keys(a), ...Object.keys(b)])].sort();
}
