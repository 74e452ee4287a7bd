import { GuestError } from '../model/errors.js';
import { redact } from '../model/redact.js';

/** Where --offline may still read from: a file on this host (an apt `file:` or `copy:` mirror). */
function isLocalSource(url: string): boolean {
  return /^(file|copy):/.test(url);
}

/**
 * Under --offline (`network` false) refuses, before any connection is tried, an action that
 * would reach the network: what needed it, where it would have gone, and how to do without. Sources
 * that are all local pass.
 */
export function requireNetwork(network: boolean, what: string, urls: string[], fix: string): void {
  if (network) return;
  const remote = urls.filter((u) => !isLocalSource(u));
  if (urls.length > 0 && remote.length === 0) return;
  const where = remote.length ? ` from ${remote.map(redact).join(', ')}` : '';
  throw new GuestError('E_OFFLINE', `--offline: ${what} needs the network${where} (${fix})`);
}
