import { runLogged } from './exec.js';
import type { StepLog } from '../model/step.js';

/** One field of a Debian control stanza (`Package: x`), as dpkg-deb -f and apt-cache show print them. */
export function controlField(stanza: string, name: string): string | undefined {
  return new RegExp(`^${name}: (.+)$`, 'm').exec(stanza)?.[1]?.trim();
}

/** Package fields read back from a .deb with `dpkg-deb -f`, never predicted from its file name. */
export async function readDebFields<K extends string>(log: StepLog, file: string, names: K[], signal?: AbortSignal): Promise<Record<K, string>> {
  const out = await runLogged(log, 'dpkg-deb', ['-f', file, ...names], { capture: true, signal });
  return Object.fromEntries(names.map((n) => [n, controlField(out, n) ?? ''])) as Record<K, string>;
}
