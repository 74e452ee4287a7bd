import type { EngineListener } from '../events.js';

/** A subscriber to engine events that may need to finish drawing before the process exits. */
export interface Reporter {
  listen: EngineListener;
  close?(): Promise<void>;
}

export type ProgressMode = 'tty' | 'plain' | 'json';

/**
 * The one place that decides how progress is shown: an explicit --progress wins, --json means json,
 * and otherwise a listr2 tree only on a terminal outside CI, plain timestamped lines everywhere else.
 */
export function chooseProgressMode(options: { progress?: string; json?: boolean }, isTTY: boolean, env: NodeJS.ProcessEnv): ProgressMode {
  if (options.progress === 'tty' || options.progress === 'plain' || options.progress === 'json') return options.progress;
  if (options.json) return 'json';
  const ci = env.CI !== undefined && env.CI !== '' && env.CI !== 'false' && env.CI !== '0';
  return isTTY && !ci && env.TERM !== 'dumb' ? 'tty' : 'plain';
}
