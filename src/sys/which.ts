/**
 * The path of a command on PATH, or null. zx's `which`, loaded on first use: a no-op build looks
 * no tool up, and loading zx was a fifth of its start-up.
 */
export async function findOnPath(command: string): Promise<string | null> {
  const { which } = await import('zx');
  return which(command, { nothrow: true });
}
