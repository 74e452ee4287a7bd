import type { Json } from './json.js';

// scheme://userinfo@ — the userinfo is everything up to the last @ before the host, without / or whitespace
const URL_USERINFO = /\b([a-z][a-z0-9+.-]*:\/\/)[^\s/@'"]+@/gi;

/**
 * The one redaction of credentials: a URL's userinfo (`https://user:secret@host/` →
 * `https://***@host/`) anywhere in a text. Every logger, plan printer and manifest writer passes
 * what it shows through here.
 */
export function redact(text: string): string {
  return text.replace(URL_USERINFO, '$1***@');
}

/** redact() applied to every string inside JSON data (plan --json, manifest.json). */
export function redactJson<T extends Json>(value: T): T {
  if (typeof value === 'string') return redact(value) as T;
  if (Array.isArray(value)) return value.map((v) => redactJson(v)) as T;
  if (value && typeof value === 'object') return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, redactJson(v)])) as T;
  return value;
}
