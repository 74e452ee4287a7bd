import { isDeepStrictEqual } from 'node:util';
import { GuestError } from '../model/errors.js';
import { formatKeyPath, parseKeyPath, parseOverride, type KeyPath } from './overrides.js';
import { schemaAt } from './schema.js';

/** One value of a matrix axis: what `--set key=value` would give that key. */
export type MatrixScalar = string | number | boolean;
export type MatrixValue = MatrixScalar | MatrixScalar[];

/**
 * A pipeline's `matrix:` as written: axes keyed by `--set` key paths, each a list of values, plus
 * GitHub Actions' `exclude` (drop the combinations an entry matches) and `include` (add keys to the
 * combinations it matches, or add a combination of its own).
 */
export interface MatrixSection {
  include?: Record<string, MatrixValue>[];
  exclude?: Record<string, MatrixValue>[];
  [axis: string]: MatrixValue[] | Record<string, MatrixValue>[] | undefined;
}

/** One combination: the pipeline values it sets, in axis order, as `--set` key paths. */
export interface MatrixCombination {
  values: Record<string, MatrixValue>;
}

type Where = (path: KeyPath) => string;

/**
 * The combinations of a matrix, in GitHub's order: the cartesian product of the axes (the first
 * axis outermost), minus the exclusions, then the inclusions. Every key must be a pipeline key and
 * every value fit it; a mistake names the matrix key and the fix, never drops a combination silently.
 */
export function expandMatrix(section: MatrixSection, where: Where): MatrixCombination[] {
  const axes = Object.entries(section).filter(([k]) => k !== 'include' && k !== 'exclude') as [string, MatrixValue[]][];
  for (const [axis, values] of axes) {
    checkKey(axis, ['matrix', axis], where);
    values.forEach((v, i) => checkValue(axis, v, ['matrix', axis, i], where));
    const twice = values.find((v, i) => values.findIndex((w) => isDeepStrictEqual(v, w)) !== i);
    if (twice !== undefined) throw invalid(where(['matrix', axis]), `matrix.${axis} lists ${setText(axis, twice)} twice`);
  }
  const axisNames = axes.map(([a]) => a);
  let combos: Record<string, MatrixValue>[] = axes.length ? [{}] : [];
  for (const [axis, values] of axes) combos = combos.flatMap((c) => values.map((v) => ({ ...c, [axis]: v })));

  (section.exclude ?? []).forEach((entry, i) => {
    const at = where(['matrix', 'exclude', i]);
    for (const key of Object.keys(entry)) {
      if (!axisNames.includes(key)) throw invalid(at, `matrix.exclude[${i}]: ${key} is not an axis of the matrix (axes: ${axisNames.join(', ') || 'none'})`);
    }
    const before = combos.length;
    combos = combos.filter((c) => !matches(c, entry));
    if (combos.length === before) throw invalid(at, `matrix.exclude[${i}] (${describe(entry)}) matches no combination: fix its values or remove it`);
  });

  const original = combos.map((c) => ({ ...c }));
  (section.include ?? []).forEach((entry, i) => {
    for (const [key, v] of Object.entries(entry)) {
      checkKey(key, ['matrix', 'include', i, key], where);
      checkValue(key, v, ['matrix', 'include', i, key], where);
    }
    // GitHub's rule: an entry extends every combination whose axis values it does not contradict
    const own = Object.fromEntries(Object.entries(entry).filter(([k]) => axisNames.includes(k)));
    const extended = combos.filter((c, n) => n < original.length && matches(original[n]!, own));
    if (extended.length) for (const c of extended) Object.assign(c, entry);
    else combos.push({ ...entry });
  });
  if (!combos.length) throw invalid(where(['matrix']), 'matrix: no combination is left (give each axis at least one value, or remove matrix:)');
  const seen = new Set<string>();
  for (const c of combos) {
    const text = describe(c);
    if (seen.has(text)) throw invalid(where(['matrix']), `matrix: the combination ${text} comes twice (an include repeats a combination the axes make)`);
    seen.add(text);
  }
  return combos.map((values) => ({ values }));
}

/** `kernel.version=6.1, driver.version=550.127.05` */
export function describe(values: Record<string, MatrixValue>): string {
  return Object.entries(values)
    .map(([k, v]) => setText(k, v))
    .join(', ');
}

/** The `--set` argument that gives a key this value (lists as YAML flow, which --set reads). */
export function setText(key: string, value: MatrixValue): string {
  return `${key}=${Array.isArray(value) ? JSON.stringify(value) : String(value)}`;
}

function matches(combo: Record<string, MatrixValue>, entry: Record<string, MatrixValue>): boolean {
  return Object.entries(entry).every(([k, v]) => isDeepStrictEqual(combo[k], v));
}

function checkKey(key: string, path: KeyPath, where: Where): void {
  if (key === 'name' || key === 'vendor' || parseKeyPath(key)[0] === 'matrix') {
    throw invalid(where(path), `matrix: ${key} cannot vary (a matrix varies the values of one pipeline; list more pipelines with --vendor/--pipeline instead)`);
  }
  if (schemaAt(parseKeyPath(key)) === undefined) {
    // parseOverride's message names the first unknown part and the keys allowed there
    try {
      parseOverride(`${key}=x`);
    } catch (err) {
      throw invalid(where(path), `matrix: ${(err as Error).message.replace(/^--set [^:]*: /, `${key}: `)}`);
    }
  }
}

function checkValue(key: string, value: MatrixValue, path: KeyPath, where: Where): void {
  const node = schemaAt(parseKeyPath(key))!;
  // YAML reads 6.10 as the number 6.1: a number where the pipeline wants text is almost always that
  if (typeof value === 'number' && node.type === 'string') {
    throw invalid(where(path), `matrix: ${formatKeyPath(parseKeyPath(key))}: ${value} is a number in YAML; quote it ("${value}"), or a value like 6.10 loses its last digit`);
  }
  try {
    parseOverride(setText(key, value));
  } catch (err) {
    throw invalid(where(path), `matrix: ${(err as Error).message.replace(/^--set /, '')}`);
  }
}

function invalid(at: string, message: string): GuestError {
  return new GuestError('E_PIPELINE_INVALID', `${at}: ${message}`);
}
