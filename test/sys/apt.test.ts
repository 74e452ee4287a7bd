import { existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { aptShow } from '../../src/sys/apt.js';
import { testDir } from '../helpers.js';

describe('aptShow with a memo', () => {
  const path = process.env.PATH;
  afterEach(() => {
    process.env.PATH = path;
  });

  it("answers from the memo while apt's state is unchanged, and asks apt again when it is not", async () => {
    const dir = testDir();
    const fresh = await aptShow('linux-source-6.1', { dir, write: true });
    expect(fresh.version).toMatch(/^6\.1\./);
    // without apt-cache on PATH, only the memo can answer
    process.env.PATH = testDir();
    expect(await aptShow('linux-source-6.1', { dir, write: true })).toEqual(fresh);
    // a memo made against another apt state is not believed: apt is asked (and is not there)
    writeFileSync(join(dir, 'apt-show-linux-source-6.1.json'), JSON.stringify({ state: 'other', pkg: { ...fresh, version: '0.0' } }));
    await expect(aptShow('linux-source-6.1', { dir, write: true })).rejects.toThrow(/not in the host's apt sources/);
  });

  it('plan (write: false) reads the memo but never writes one', async () => {
    const dir = testDir();
    await aptShow('linux-source-6.1', { dir, write: false });
    expect(existsSync(join(dir, 'apt-show-linux-source-6.1.json'))).toBe(false);
  });
});
