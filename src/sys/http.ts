/**
 * got, loaded on first use: a build that downloads nothing (a no-op rebuild) does not pay for
 * loading it at start-up (about a quarter of gpu-guest's own start-up time).
 */
let loading: Promise<typeof import('got')> | undefined;

export function loadGot(): Promise<typeof import('got')> {
  return (loading ??= import('got'));
}

/** got's HTTPError, recognised without loading got: the status of an answer that was not 2xx. */
export function httpStatusOf(err: unknown): number | undefined {
  if (!(err instanceof Error) || err.name !== 'HTTPError') return undefined;
  return (err as Error & { response?: { statusCode?: number } }).response?.statusCode;
}

/** The system error code of a request that got no answer (ECONNREFUSED, ETIMEDOUT …), without loading got. */
export function requestCodeOf(err: unknown): string | undefined {
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === 'string' && code.startsWith('E') ? code : undefined;
}
