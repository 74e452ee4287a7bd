import { parse as parseYaml } from 'yaml';
import { GuestError } from '../model/errors.js';
import { keysAt, schemaAt } from './schema.js';

export type KeyPath = (string | number)[];

/** One `--set key.path=value`, parsed and checked against the schema. */
export interface Override {
  text: string;
  path: KeyPath;
  value: unknown;
}

/** `kernel.fragments[1]` and `kernel.fragments.1` both name the second fragment. */
export function parseKeyPath(spec: string): KeyPath {
  return spec
    .replace(/\[(\d+)\]/g, '.$1')
    .split('.')
    .map((part) => (/^\d+$/.test(part) ? Number(part) : part));
}

export function formatKeyPath(path: KeyPath): string {
  return path.map((p, i) => (typeof p === 'number' ? `[${p}]` : i === 0 ? p : `.${p}`)).join('');
}

export function parseOverride(text: string): Override {
  const eq = text.indexOf('=');
  if (eq <= 0) {
    throw new GuestError('E_SET_PATH', `--set ${text}: expected key.path=value (for example --set kernel.version=6.1.55)`);
  }
  const spec = text.slice(0, eq).trim();
  const raw = text.slice(eq + 1);
  const path = parseKeyPath(spec);
  if (path.some((p) => p === '')) {
    throw new GuestError('E_SET_PATH', `--set ${text}: '${spec}' is not a key path (use dots: kernel.source.tarball)`);
  }
  for (let i = 0; i < path.length; i++) {
    if (schemaAt(path.slice(0, i + 1)) === undefined) {
      const parent = path.slice(0, i);
      const where = parent.length ? `under ${formatKeyPath(parent)}` : 'at the top level';
      const known = keysAt(parent);
      const hint = known.length ? ` (known keys: ${known.join(', ')})` : '';
      throw new GuestError('E_SET_PATH', `--set ${text}: no key '${path[i]}' ${where}${hint}`);
    }
  }
  return { text, path, value: coerce(text, raw, schemaAt(path)!) };
}

function coerce(text: string, raw: string, node: { type?: string; enum?: readonly unknown[] }): unknown {
  const type = node.type ?? (node.enum ? typeof node.enum[0] : 'string');
  switch (type) {
    case 'integer':
    case 'number': {
      const n = Number(raw);
      if (raw.trim() === '' || Number.isNaN(n)) throw new GuestError('E_SET_PATH', `--set ${text}: expected a number, found '${raw}'`);
      return n;
    }
    case 'boolean':
      if (raw === 'true') return true;
      if (raw === 'false') return false;
      throw new GuestError('E_SET_PATH', `--set ${text}: expected true or false, found '${raw}'`);
    case 'array':
      if (raw.trim().startsWith('[')) return parseFlow(text, raw);
      return raw === '' ? [] : raw.split(',').map((s) => s.trim());
    case 'object':
      return parseFlow(text, raw);
    default:
      return raw;
  }
}

function parseFlow(text: string, raw: string): unknown {
  try {
    return parseYaml(raw);
  } catch (err) {
    throw new GuestError('E_SET_PATH', `--set ${text}: value is not valid YAML flow syntax (${(err as Error).message.split('\n')[0]})`, { cause: err });
  }
}

/** Writes an override into plain data, creating intermediate objects and arrays. */
export function applyOverride(data: Record<string, unknown>, override: Override): void {
  let node: Record<string | number, unknown> = data;
  override.path.forEach((part, i) => {
    if (Array.isArray(node) && typeof part === 'number' && part > node.length) {
      throw new GuestError('E_SET_PATH', `--set ${override.text}: ${formatKeyPath(override.path.slice(0, i))} has ${node.length} item(s); index [${part}] would leave a gap (use [0] to [${node.length}])`);
    }
    if (i === override.path.length - 1) {
      node[part] = override.value;
      return;
    }
    const next = node[part];
    if (next === undefined || next === null || typeof next !== 'object') {
      node[part] = typeof override.path[i + 1] === 'number' ? [] : {};
    }
    node = node[part] as Record<string | number, unknown>;
  });
}
