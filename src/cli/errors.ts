// CLI errors: one line for the user (the fix is in the message), the stack only with --verbose.

/** A mistake in how the command was called (exit code 2). */
export class UsageError extends Error {
  override name = 'UsageError';
}

export function reportAndExit(e: unknown, verbose: boolean): never {
  const err = e instanceof Error ? e : new Error(String(e));
  process.stderr.write(`vlmscope: ${err.message}\n`);
  if (verbose && err.stack) process.stderr.write(`${err.stack}\n`);
  process.exit(err instanceof UsageError ? 2 : 1);
}
