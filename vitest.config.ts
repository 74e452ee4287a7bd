import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 60_000,
    hookTimeout: 1_800_000,
    // Integration tests share one kernel build and one rootfs through the cache; files run one at a
    // time so that two kernel builds never compete for the two cores.
    fileParallelism: false,
    reporters: ['default'],
    // GitHub's workflow parser imports its schema JSON without an import attribute, which Node's own
    // loader refuses: vitest transforms it instead
    server: { deps: { inline: ['@actions/workflow-parser'] } },
  },
});
