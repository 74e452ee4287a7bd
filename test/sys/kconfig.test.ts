import { describe, expect, it } from 'vitest';
import { evaluate } from '../../src/sys/kconfig/expr.js';
import { createAllowList, findMismatches, parseDotConfig, parseFragment } from '../../src/sys/kconfig/options.js';
import { GuestError } from '../../src/model/errors.js';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { indexKconfig } from '../../src/sys/kconfig/tree.js';
import { assertKernelNeeds } from '../../src/sys/kconfig/verify.js';
import { testDir } from '../helpers.js';

describe('fragments', () => {
  it('reads set, unset, string and numeric options; =n means not set', () => {
    const opts = parseFragment('# comment\nCONFIG_A=y\n\n# CONFIG_B is not set\nCONFIG_C="-x"\nCONFIG_D=0x10\nCONFIG_E=n\nCONFIG_F=m\n', 'f.conf');
    expect(opts.map((o) => [o.symbol, o.value, o.line])).toEqual([
      ['A', 'y', 2],
      ['B', null, 4],
      ['C', '"-x"', 5],
      ['D', '0x10', 6],
      ['E', null, 7],
      ['F', 'm', 8],
    ]);
  });
  const malformed = ['CONFIG_A = y', 'CONFIG_A=yes', 'A=y', 'CONFIG_A="unterminated', 'CONFIG_A'];
  it.each(malformed)('rejects the malformed line %j with file:line', (line) => {
    let err: unknown;
    try {
      parseFragment(`CONFIG_OK=y\n${line}\n`, '/x/frag.conf');
    } catch (e) {
      err = e;
    }
    expect((err as GuestError).code).toBe('E_FRAGMENT_SYNTAX');
    expect((err as GuestError).message).toContain('frag.conf:2:');
  });
});

describe('comparing with the final .config', () => {
  const final = parseDotConfig('CONFIG_A=y\n# CONFIG_B is not set\nCONFIG_C=m\nCONFIG_S="x"\n');
  const cases: [string, string, boolean][] = [
    ['CONFIG_A=y', 'kept', false],
    ['CONFIG_B=y', 'dropped', true],
    ['CONFIG_C=y', 'demoted to m', true],
    ['# CONFIG_A is not set', 'switched on anyway', true],
    ['# CONFIG_B is not set', 'kept off', false],
    ['# CONFIG_Z is not set', 'absent counts as off', false],
    ['CONFIG_S="y"', 'string changed', true],
  ];
  it.each(cases)('%s (%s)', (line, _, mismatch) => {
    expect(findMismatches(parseFragment(line, 'f'), final).length > 0).toBe(mismatch);
  });
  it('lets the last request for a symbol win, as merge_config.sh does', () => {
    expect(findMismatches(parseFragment('CONFIG_B=y\n# CONFIG_B is not set\n', 'f'), final)).toEqual([]);
  });
});

describe('allow-list', () => {
  it('matches whole symbol names only; blank lines allow nothing', () => {
    const allowed = createAllowList(['', '  ', 'CONFIG_USB', 'DRM_I915']);
    expect(allowed('USB')).toBe(true);
    expect(allowed('DRM_I915')).toBe(true);
    expect(allowed('USB_STORAGE')).toBe(false);
    expect(allowed('DRM')).toBe(false);
    expect(createAllowList([''])('ANYTHING')).toBe(false);
  });
});

describe('dependency expressions', () => {
  const values = parseDotConfig('CONFIG_Y=y\nCONFIG_M=m\nCONFIG_S="abc"\nCONFIG_N=42\n');
  const cases: [string, number][] = [
    ['Y', 2],
    ['M', 1],
    ['OFF', 0],
    ['!OFF', 2],
    ['Y && M', 1],
    ['OFF || M', 1],
    ['Y && (OFF || !M)', 1],
    ['S = "abc"', 2],
    ['S != "abc"', 0],
    ['N > 40', 2],
    ['X86_64 || (PCI_GOANY || PCI_GOMMCONFIG)', 0],
    ['M=y', 0],
    ['Y=y', 2],
  ];
  it.each(cases)('%s evaluates to %i', (expr, expected) => {
    expect(evaluate(expr, values).value).toBe(expected);
  });
});

describe("what the pipeline's driver needs of the final .config", () => {
  const needs = [{ symbol: 'X86_PAT', reason: 'the driver does not compile without it' }, { symbol: 'MODULES', reason: 'the driver is modules' }];
  const tree = () => {
    const dir = testDir();
    writeFileSync(join(dir, 'Kconfig'), 'config MTRR\n\tbool "MTRR"\n\nconfig X86_PAT\n\tbool "PAT"\n\tdepends on MTRR\n\nconfig MODULES\n\tbool "modules"\n');
    return indexKconfig(dir);
  };

  it('passes when every need is on', () => {
    expect(() => assertKernelNeeds(needs, parseDotConfig('CONFIG_MTRR=y\nCONFIG_X86_PAT=y\nCONFIG_MODULES=y\n'), [], tree())).not.toThrow();
  });

  it('names the fragment line that turned a need off, and the unmet dependency of another', () => {
    const requested = parseFragment('CONFIG_MTRR=y\n# CONFIG_X86_PAT is not set\n', '/x/no-pat.conf');
    expect(() => assertKernelNeeds(needs, parseDotConfig('CONFIG_MTRR=y\n# CONFIG_X86_PAT is not set\nCONFIG_MODULES=y\n'), requested, tree()))
      .toThrow(expect.objectContaining({ code: 'E_DRIVER_KERNEL', message: 'the kernel lacks an option the driver needs: CONFIG_X86_PAT is not set, but the driver does not compile without it: no-pat.conf:2 turns it off' }));
    const err = (() => { try { assertKernelNeeds(needs, parseDotConfig('# CONFIG_MTRR is not set\n'), [], tree()); } catch (e) { return e as GuestError; } })();
    expect(err?.message).toMatch(/CONFIG_X86_PAT is not set, but the driver does not compile without it: depends on MTRR \(not set: MTRR\) \[Kconfig:4\]$/);
    expect(err?.details).toEqual(['CONFIG_MODULES is not set, but the driver is modules: no fragment asks for it (add CONFIG_MODULES=y to one)']);
  });
});
