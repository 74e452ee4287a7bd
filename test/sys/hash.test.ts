import { createHash, randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { sha256File } from '../../src/sys/hash.js';
import { testDir } from '../helpers.js';

describe('sha256File', () => {
  it('equals sha256 of the whole content at every size around its 4 MiB reads', async () => {
    const dir = testDir();
    const chunk = 4 << 20;
    for (const size of [0, 1, chunk - 1, chunk, chunk + 1, 2 * chunk + 3]) {
      const data = randomBytes(size);
      const file = join(dir, `f${size}`);
      writeFileSync(file, data);
      expect(await sha256File(file), `size ${size}`).toBe(createHash('sha256').update(data).digest('hex'));
    }
  });

  it('a missing file is ENOENT', async () => {
    await expect(sha256File(join(testDir(), 'none'))).rejects.toMatchObject({ code: 'ENOENT' });
  });
});
