/**
 * Every error gpu-guest raises on purpose is a GuestError: a stable `code`, a message that says
 * what happened, to which input, and what to do, and the `cause` it wraps.
 */
export type ErrorKind = 'usage' | 'build' | 'interrupted';

/** Error codes that mean the user's command line or pipeline file is wrong (exit status 2). */
const USAGE_CODES = new Set([
  'E_USAGE',
  'E_UNKNOWN_VENDOR',
  'E_PIPELINE_NOT_FOUND',
  'E_PIPELINE_SYNTAX',
  'E_PIPELINE_INVALID',
  'E_SET_PATH',
  'E_UNKNOWN_TASK',
  'E_CACHE_UNWRITABLE',
  'E_OUT_UNWRITABLE',
  'E_CYCLE',
  'E_NOT_CACHED',
  'E_VGPU_NAME',
  'E_FRAGMENT_NOT_FOUND',
  'E_FRAGMENT_SYNTAX',
]);

export class GuestError extends Error {
  override name = 'GuestError';
  readonly code: string;
  /** Lines shown under the message (offenders, one per line). */
  readonly details: string[];

  constructor(code: string, message: string, options: { cause?: unknown; details?: string[] } = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
    this.details = options.details ?? [];
  }

  get kind(): ErrorKind {
    if (this.code === 'E_INTERRUPTED') return 'interrupted';
    return USAGE_CODES.has(this.code) ? 'usage' : 'build';
  }
}

export function isGuestError(err: unknown): err is GuestError {
  return err instanceof GuestError;
}

/** Exit statuses, documented in the README. */
export const EXIT = { ok: 0, taskFailed: 1, usage: 2, interrupted: 130 } as const;

export function exitStatusFor(err: unknown): number {
  if (!isGuestError(err)) return EXIT.taskFailed;
  switch (err.kind) {
    case 'usage':
      return EXIT.usage;
    case 'interrupted':
      return EXIT.interrupted;
    default:
      return EXIT.taskFailed;
  }
}

/** The message of any thrown value, without a stack. */
export function messageOf(err: unknown): string {
  if (err instanceof Error) return err.message;
  return String(err);
}
