import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ERROR_CODES, exitStatusFor, GuestError, type ErrorCode } from '../../src/model/errors.js';
import { repoRoot } from '../helpers.js';

function filesUnder(dir: string, ext: RegExp): string[] {
  return readdirSync(dir).flatMap((name) => {
    const p = join(dir, name);
    return statSync(p).isDirectory() ? filesUnder(p, ext) : ext.test(name) ? [p] : [];
  });
}

describe('the error-code table', () => {
  it('is the table the README shows, row for row', async () => {
    // @ts-expect-error a plain .mjs script without types
    const { errorTable } = await import('../../scripts/error-table.mjs');
    const readme = readFileSync(join(repoRoot, 'README.md'), 'utf8');
    const shown = /<!-- error-table:start -->\n([\s\S]*?)\n<!-- error-table:end -->/.exec(readme)?.[1];
    expect(shown, 'README.md has no error table between the error-table markers').toBeDefined();
    expect(shown).toBe(errorTable());
  });

  it('holds every code the source throws, and nothing it never throws', () => {
    const used = new Set<string>();
    for (const f of filesUnder(join(repoRoot, 'src'), /\.ts$/)) {
      for (const m of readFileSync(f, 'utf8').matchAll(/'(E_[A-Z_]+)'/g)) used.add(m[1]!);
    }
    expect([...used].filter((c) => !(c in ERROR_CODES)).sort()).toEqual([]);
    expect(Object.keys(ERROR_CODES).filter((c) => !used.has(c)).sort()).toEqual([]);
  });

  it('has every code asserted by at least one test', () => {
    const tests = filesUnder(join(repoRoot, 'test'), /\.test\.ts$/)
      .filter((f) => !f.endsWith('errors.test.ts'))
      .map((f) => readFileSync(f, 'utf8'))
      .join('\n');
    expect(Object.keys(ERROR_CODES).filter((c) => !new RegExp(`\\b${c}\\b`).test(tests)).sort()).toEqual([]);
  });

  it('maps each kind to its exit status and keeps the cause', () => {
    const cause = new Error('underlying');
    const exit = (code: ErrorCode) => exitStatusFor(new GuestError(code, 'x', { cause }));
    expect(exit('E_PIPELINE_INVALID')).toBe(2);
    expect(exit('E_COMMAND_FAILED')).toBe(1);
    expect(exit('E_INTERRUPTED')).toBe(130);
    expect(exitStatusFor(new Error('not ours'))).toBe(1);
    expect(new GuestError('E_DOWNLOAD', 'x', { cause }).cause).toBe(cause);
  });
});
