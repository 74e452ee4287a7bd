/**
 * Ctrl-C and SIGTERM abort the run: running tasks get the AbortSignal, clean up (unmount, remove
 * their scratch) and the process exits 130. A second signal says cleanup is still under way.
 */
export function abortOnSignals(onSecond: () => void): { signal: AbortSignal; dispose(): void } {
  const controller = new AbortController();
  const handler = () => {
    if (controller.signal.aborted) onSecond();
    else controller.abort();
  };
  process.on('SIGINT', handler);
  process.on('SIGTERM', handler);
  return {
    signal: controller.signal,
    dispose() {
      process.off('SIGINT', handler);
      process.off('SIGTERM', handler);
    },
  };
}
