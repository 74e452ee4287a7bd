import { effectiveRequests, formatValue, type OptionValue, type RequestedOption } from './options.js';
import type { KconfigIndex } from './tree.js';
import { activeSelectors, explainMismatch, isOn, unmetDependencies } from './verify.js';

/**
 * One side of `config diff`: the values of a full .config, or the requests of fragments. A fragment
 * side names only some symbols (`named`); the others are unspecified, not off.
 */
export interface ConfigSide {
  label: string;
  values: Map<string, OptionValue>;
  named?: Set<string>;
}

/** A symbol whose value differs; undefined: the side's fragments do not name it. */
export interface ConfigDifference {
  symbol: string;
  a: OptionValue | undefined;
  b: OptionValue | undefined;
}

export interface ConfigDiff {
  /** Off (or not set) in a, on (y, m or a value) in b. */
  on: ConfigDifference[];
  /** On in a, off in b. */
  off: ConfigDifference[];
  /** On in both with different values (y/m, numbers, strings), or named by one side's fragments only. */
  value: ConfigDifference[];
}

/**
 * Compares two configs. Where a side is fragments only the symbols it names are compared (when both
 * are, the symbols either names), so a built .config is checked against what fragments ask for
 * without listing the thousands of options they leave to the kernel.
 */
export function diffConfigs(a: ConfigSide, b: ConfigSide): ConfigDiff {
  const symbols = a.named && b.named ? new Set([...a.named, ...b.named]) : (a.named ?? b.named ?? new Set([...a.values.keys(), ...b.values.keys()]));
  const valueOf = (side: ConfigSide, symbol: string): OptionValue | undefined => {
    if (side.named && !side.named.has(symbol)) return undefined;
    const v = side.values.get(symbol) ?? null;
    return v === 'n' ? null : v;
  };
  const diff: ConfigDiff = { on: [], off: [], value: [] };
  for (const symbol of [...symbols].sort()) {
    const d = { symbol, a: valueOf(a, symbol), b: valueOf(b, symbol) };
    if (d.a === d.b) continue;
    if (d.a === undefined || d.b === undefined) diff.value.push(d);
    else if (!isOn(d.a) && isOn(d.b)) diff.on.push(d);
    else if (isOn(d.a) && !isOn(d.b)) diff.off.push(d);
    else diff.value.push(d);
  }
  return diff;
}

/** The values of fragments merged in order (the last request for a symbol wins, as merge_config.sh does). */
export function fragmentSide(label: string, requests: RequestedOption[]): ConfigSide {
  const last = effectiveRequests(requests);
  return { label, values: new Map(last.map((r) => [r.symbol, r.value])), named: new Set(last.map((r) => r.symbol)) };
}

export function formatDiff(diff: ConfigDiff, a: string, b: string): string {
  const shown = (v: OptionValue | undefined) => (v === undefined ? '-' : v === null ? 'not set' : v);
  const width = Math.max(20, ...[...diff.on, ...diff.off, ...diff.value].map((d) => d.symbol.length + 7));
  const aWidth = Math.max(10, ...[...diff.on, ...diff.off, ...diff.value].map((d) => shown(d.a).length + 3));
  const lines = [`a: ${a}`, `b: ${b}`];
  const group = (title: string, items: ConfigDifference[]) => {
    if (!items.length) return;
    lines.push('', `${title} (${items.length}):`);
    for (const d of items) lines.push(`  ${`CONFIG_${d.symbol}`.padEnd(width)} a: ${shown(d.a).padEnd(aWidth)} b: ${shown(d.b)}`);
  };
  group('on in b, off in a', diff.on);
  group('off in b, on in a', diff.off);
  group('values differ', diff.value);
  const total = diff.on.length + diff.off.length + diff.value.length;
  lines.push('', total ? `${total} option${total > 1 ? 's' : ''} differ: ${diff.on.length} on, ${diff.off.length} off, ${diff.value.length} value` : 'no option differs');
  return `${lines.join('\n')}\n`;
}

/** Why one option is what it is in a built .config. */
export interface OptionExplanation {
  symbol: string;
  value: OptionValue;
  /** The request that won (the last), and the earlier ones it overrode. */
  requested?: RequestedOption;
  overridden: RequestedOption[];
  definitions: { file: string; line: number }[];
  /** Each `depends on`/prompt condition the final .config does not meet for =y (or =m when the value is m). */
  unmet: string[];
  /** Options that are on and select it. */
  selectedBy: string[];
  /** One line: the reason. */
  because: string;
}

/**
 * Explains an option of a built .config from the requests (which fragment file:line asked for what)
 * and the Kconfig tree (who selects it, which dependency is unmet). Undefined: no such symbol.
 */
export function explainOption(symbol: string, final: Map<string, OptionValue>, requests: RequestedOption[], index: KconfigIndex): OptionExplanation | undefined {
  const definitions = index.definitions.get(symbol);
  if (!definitions) return undefined;
  const value = final.get(symbol) ?? null;
  const mine = requests.filter((r) => r.symbol === symbol);
  const requested = mine.at(-1);
  const unmet = unmetDependencies(symbol, value === 'm' || requested?.value === 'm' ? 1 : 2, final, index);
  const selectedBy = activeSelectors(symbol, final, index).map((s) => `${s.by} (select in ${s.file}:${s.line})`);
  const at = (r: RequestedOption) => `${r.file}:${r.line}`;
  let because: string;
  if (requested && (requested.value ?? null) === value) because = `requested: ${formatValue(symbol, requested.value)} at ${at(requested)}`;
  else if (requested) because = `requested ${requested.value === null ? 'off' : formatValue(symbol, requested.value)} at ${at(requested)}, but ${explainMismatch({ request: requested, actual: value }, final, index)}`;
  else if (isOn(value)) because = selectedBy.length ? `not requested; selected by ${selectedBy.join(', ')}` : 'not requested; on by its default (its dependencies are met)';
  else because = unmet.length ? `not requested, and it could not be on anyway: unmet ${unmet.join('; ')}` : 'not requested, and its default is off (ask for it in a fragment)';
  return { symbol, value, requested, overridden: mine.slice(0, -1), definitions: definitions.map((d) => ({ file: d.file, line: d.line })), unmet, selectedBy, because };
}

export function formatExplanation(e: OptionExplanation, where: string): string {
  const lines = [`${formatValue(e.symbol, e.value)}  (${where})`, `  because: ${e.because}`];
  for (const r of e.overridden) lines.push(`  overridden request: ${formatValue(r.symbol, r.value)} at ${r.file}:${r.line}`);
  lines.push(`  defined: ${e.definitions.map((d) => `${d.file}:${d.line}`).join(', ')}`);
  if (e.selectedBy.length && !/selected by|forced on by/.test(e.because)) lines.push(`  selected by: ${e.selectedBy.join(', ')}`);
  if (e.unmet.length && !e.because.includes('unmet')) lines.push(`  unmet: ${e.unmet.join('; ')}`);
  return `${lines.join('\n')}\n`;
}
