import { execFileSync } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { LocalCacheStore } from '../../src/engine/cache.js';
import { cliBin, suiteDir } from '../helpers.js';

// JSON output larger than a pipe holds (64 KiB), read by a reader slower than gpu-guest: the
// listing of a cache with 1,500 entries
describe('output into a pipe', () => {
  const cache = join(suiteDir('gpu-guest-pipe-'), 'cache');
  LocalCacheStore.open(cache);
  for (let i = 0; i < 1500; i++) mkdirSync(join(cache, 'entries', i.toString(16).padStart(64, '0')), { recursive: true });
  const sh = (script: string) => execFileSync('bash', ['-c', script], { encoding: 'utf8', env: { ...process.env, GG: cliBin, CACHE: cache } });

  it('reaches a slow reader whole before gpu-guest exits', () => {
    const whole = Number(sh('node "$GG" cache list --json --cache-dir "$CACHE" > "$CACHE/../list.json"; wc -c < "$CACHE/../list.json"'));
    expect(whole).toBeGreaterThan(3 * 65536);
    expect(Number(sh('node "$GG" cache list --json --cache-dir "$CACHE" | (sleep 1; wc -c)'))).toBe(whole);
  });

  it('a reader that stops early ends the output quietly, and the exit status is the command\'s', () => {
    const out = sh('node "$GG" cache list --json --cache-dir "$CACHE" 2>"$CACHE/../err" | head -c 10 >/dev/null; echo "status ${PIPESTATUS[0]} $(wc -c < "$CACHE/../err")"');
    expect(out.trim()).toBe('status 0 0');
    const failed = sh('node "$GG" plan --vendor no-such-vendor 2>&1 | head -c 5 >/dev/null; echo ${PIPESTATUS[0]}');
    expect(failed.trim()).toBe('2');
  });
});
