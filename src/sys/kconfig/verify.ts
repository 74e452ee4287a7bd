import { basename } from 'node:path';
import { GuestError } from '../../model/errors.js';
import { evaluate } from './expr.js';
import { createAllowList, findMismatches, formatValue, type Mismatch, type OptionValue, type RequestedOption } from './options.js';
import { PROMPT_IF, type KconfigIndex, type Selector } from './tree.js';

/** What verifying a final .config against the requests found. */
export interface ConfigVerdict {
  /** Symbols no Kconfig file of this kernel defines. */
  unknown: string[];
  /** One line per offender: requested vs. final value and the reason. */
  offenders: string[];
  /** Offenders the allow-list let through. */
  allowed: string[];
}

/**
 * Compares the final .config with every request (both ways) and explains each difference from the
 * Kconfig tree: an undefined symbol, the unmet `depends on`, or who `select`s an option asked off.
 */
export function verifyConfig(requests: RequestedOption[], final: Map<string, OptionValue>, index: KconfigIndex, allowDropped: string[]): ConfigVerdict {
  const allowed = createAllowList(allowDropped);
  const verdict: ConfigVerdict = { unknown: [], offenders: [], allowed: [] };
  for (const m of findMismatches(requests, final)) {
    const where = `${basename(m.request.file)}:${m.request.line}`;
    const head = `${formatValue(m.request.symbol, m.request.value)} (${where})`;
    if (!index.definitions.has(m.request.symbol)) {
      const line = `${head}: CONFIG_${m.request.symbol} does not exist in this kernel (misspelled, renamed or removed)`;
      if (allowed(m.request.symbol)) verdict.allowed.push(line);
      else verdict.unknown.push(line);
      continue;
    }
    const line = `${head}: final .config has ${m.actual === null ? 'it not set' : `${m.request.symbol}=${m.actual}`} — ${explainMismatch(m, final, index)}`;
    if (allowed(m.request.symbol)) verdict.allowed.push(line);
    else verdict.offenders.push(line);
  }
  return verdict;
}

/** Why the final .config does not hold what was requested: who forces an option asked off on, or which dependency is unmet. */
export function explainMismatch(m: Mismatch, final: Map<string, OptionValue>, index: KconfigIndex): string {
  const symbol = m.request.symbol;
  if (m.request.value === null) {
    const on = activeSelectors(symbol, final, index);
    if (on.length) return `forced on by ${on.map((s) => `${s.by} (select in ${s.file}:${s.line})`).join(', ')}; turn those off too`;
    return 'enabled by a default or another option; set the options that enable it off too';
  }
  const unmet = unmetDependencies(symbol, m.request.value === 'm' ? 1 : 2, final, index);
  if (unmet.length) return `unmet ${unmet.join('; ')}`;
  return 'its dependencies are met, but another option (a choice, a select or a range) overrides the value';
}

/** The options that are on in the final .config and whose `select` (with its condition met) names the symbol. */
export function activeSelectors(symbol: string, final: Map<string, OptionValue>, index: KconfigIndex): Selector[] {
  return (index.selectors.get(symbol) ?? []).filter((s) => isOn(final.get(s.by)) && (!s.condition || evaluate(s.condition, final).value > 0));
}

/**
 * Each `depends on` (or prompt `if`) of the symbol's definitions that the final .config does not
 * meet for the value asked (`need` 1: =m, 2: =y), with the symbols that are off and where it is written.
 */
export function unmetDependencies(symbol: string, need: 1 | 2, final: Map<string, OptionValue>, index: KconfigIndex): string[] {
  const unmet: string[] = [];
  for (const def of index.definitions.get(symbol) ?? []) {
    for (const expr of def.dependsOn) {
      const prompt = expr.startsWith(PROMPT_IF);
      const cond = prompt ? expr.slice(PROMPT_IF.length) : expr;
      const { value, symbols } = evaluate(cond, final);
      if (value < need) {
        const off = symbols.filter((s) => !isOn(final.get(s)));
        const modular = symbols.filter((s) => final.get(s) === 'm');
        const why = [off.length ? `not set: ${off.join(', ')}` : '', modular.length && need === 2 ? `${modular.map((s) => `${s}=m`).join(', ')} allows only =m` : ''].filter(Boolean).join('; ');
        unmet.push(`${prompt ? 'its prompt needs' : 'depends on'} ${cond}${why ? ` (${why})` : ''} [${def.file}:${def.line}]`);
      }
    }
  }
  return [...new Set(unmet)];
}

export function isOn(v: OptionValue | undefined): boolean {
  return v !== undefined && v !== null && v !== 'n';
}

/** A kernel option the pipeline's driver cannot do without, and what goes wrong without it. */
export type KernelNeed = { symbol: string; reason: string };

/**
 * Fails E_DRIVER_KERNEL when the final .config lacks an option the pipeline's driver needs, naming the
 * fragment line that turned it off, or the dependency that keeps it off.
 */
export function assertKernelNeeds(needs: KernelNeed[], final: Map<string, OptionValue>, requested: RequestedOption[], index: KconfigIndex): void {
  const lacking = needs.filter((n) => !isOn(final.get(n.symbol))).map((n) => {
    const asked = requested.filter((r) => r.symbol === n.symbol).pop();
    const why = asked && asked.value === null
      ? `${basename(asked.file)}:${asked.line} turns it off`
      : (unmetDependencies(n.symbol, 2, final, index).join('; ') || `no fragment asks for it (add CONFIG_${n.symbol}=y to one)`);
    return `CONFIG_${n.symbol} is not set, but ${n.reason}: ${why}`;
  });
  if (lacking.length) throw new GuestError('E_DRIVER_KERNEL', `the kernel lacks an option the driver needs: ${lacking[0]}`, { details: lacking.slice(1) });
}

/** Throws E_UNKNOWN_SYMBOL or E_OPTION_DROPPED listing every offender, one per line. */
export function assertConfigVerdict(verdict: ConfigVerdict): void {
  if (verdict.unknown.length) {
    const n = verdict.unknown.length;
    throw new GuestError('E_UNKNOWN_SYMBOL', `${n} requested option${n > 1 ? 's name symbols' : ' names a symbol'} this kernel does not have (fix the fragment, or list the symbol in kernel.allowDropped)`, { details: [...verdict.unknown, ...verdict.offenders] });
  }
  if (verdict.offenders.length) {
    const n = verdict.offenders.length;
    throw new GuestError('E_OPTION_DROPPED', `${n} requested option${n > 1 ? 's' : ''} did not survive make olddefconfig (add the unmet dependencies to a fragment, or list the symbol in kernel.allowDropped)`, { details: verdict.offenders });
  }
}
