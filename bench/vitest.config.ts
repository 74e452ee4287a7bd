import { defineConfig } from 'vitest/config';

// `npm run bench`: the benchmarks, one file whose figures build on each other (a cold build first,
// then what reuses its cache). Not part of `npm test`: targets are measured here, never asserted
// by timed tests.
export default defineConfig({
  test: {
    include: ['bench/**/*.bench-run.ts'],
    testTimeout: 7_200_000,
    hookTimeout: 7_200_000,
    fileParallelism: false,
    sequence: { concurrent: false },
    reporters: ['default'],
  },
});
