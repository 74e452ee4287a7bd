import { basename } from 'node:path';
import { GuestError } from '../../model/errors.js';

/** A value in a .config: `y`, `m`, a string (with its quotes), a number; null means "is not set". */
export type OptionValue = string | null;

/** One option a fragment asks for, and where it asked. */
export interface RequestedOption {
  symbol: string;
  value: OptionValue;
  file: string;
  line: number;
}

const SET = /^CONFIG_([A-Za-z0-9_]+)=(.*)$/;
const UNSET = /^# CONFIG_([A-Za-z0-9_]+) is not set$/;
const VALUE = /^(y|m|n|"(?:[^"\\]|\\.)*"|-?\d+|0x[0-9a-fA-F]+)$/;

/**
 * Reads a fragment: `CONFIG_X=y|m|n|"string"|number`, `# CONFIG_X is not set`, comments, blank
 * lines. Anything else is an error naming file:line, so a typo never passes silently.
 */
export function parseFragment(text: string, file: string): RequestedOption[] {
  const options: RequestedOption[] = [];
  text.split('\n').forEach((raw, i) => {
    const line = raw.trim();
    if (line === '') return;
    const unset = UNSET.exec(line);
    if (unset) {
      options.push({ symbol: unset[1]!, value: null, file, line: i + 1 });
      return;
    }
    if (line.startsWith('#')) return;
    const set = SET.exec(line);
    if (!set || !VALUE.test(set[2]!)) {
      throw new GuestError('E_FRAGMENT_SYNTAX', `${basename(file)}:${i + 1}: '${line}' is not a config line (expected CONFIG_NAME=value or # CONFIG_NAME is not set) in ${file}`);
    }
    options.push({ symbol: set[1]!, value: set[2] === 'n' ? null : set[2]!, file, line: i + 1 });
  });
  return options;
}


/** The final values of a .config: every symbol set, `null` for `is not set`. */
export function parseDotConfig(text: string): Map<string, OptionValue> {
  const values = new Map<string, OptionValue>();
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    const set = SET.exec(line);
    if (set) values.set(set[1]!, set[2]!);
    const unset = UNSET.exec(line);
    if (unset) values.set(unset[1]!, null);
  }
  return values;
}

/** The last request for each symbol wins, as in merge_config.sh. */
export function effectiveRequests(options: RequestedOption[]): RequestedOption[] {
  const last = new Map<string, RequestedOption>();
  for (const o of options) {
    last.delete(o.symbol);
    last.set(o.symbol, o);
  }
  return [...last.values()];
}

/** A requested option the final .config does not honour. */
export interface Mismatch {
  request: RequestedOption;
  /** The value in the final .config (null: not set). */
  actual: OptionValue;
}

/** Compares every request with the final .config, both ways: dropped/changed values and unwanted ones. */
export function findMismatches(requests: RequestedOption[], final: Map<string, OptionValue>): Mismatch[] {
  const mismatches: Mismatch[] = [];
  for (const request of effectiveRequests(requests)) {
    const actual = final.get(request.symbol) ?? null;
    if (request.value === null ? actual !== null : actual !== request.value) mismatches.push({ request, actual });
  }
  return mismatches;
}

/**
 * The allow-list: symbols that may drop. Whole symbol names only, with or without CONFIG_; blank
 * entries are ignored — an empty pattern must never allow everything.
 */
export function createAllowList(symbols: string[]): (symbol: string) => boolean {
  const allowed = new Set(symbols.map((s) => s.trim().replace(/^CONFIG_/, '')).filter((s) => /^[A-Za-z0-9_]+$/.test(s)));
  return (symbol) => allowed.has(symbol);
}

export function formatValue(symbol: string, value: OptionValue): string {
  return value === null ? `# CONFIG_${symbol} is not set` : `CONFIG_${symbol}=${value}`;
}

/** requested.conf, kernel-config's record of every request: the option, then `# <file name>:<line>`. */
export function formatRequested(requests: RequestedOption[]): string {
  return requests.map((r) => `${formatValue(r.symbol, r.value)}  # ${basename(r.file)}:${r.line}`).join('\n') + '\n';
}

/** Reads requested.conf back: each request with the file name and line it came from. */
export function parseRequested(text: string): RequestedOption[] {
  return text.split('\n').flatMap((raw) => {
    const m = /^(.*?)\s+#\s(\S+):(\d+)$/.exec(raw.trim());
    return m ? parseFragment(m[1]!, m[2]!).map((r) => ({ ...r, line: Number(m[3]) })) : [];
  });
}
