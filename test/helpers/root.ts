/** Integration tests need root (mounts, loop devices). CI runs as root. */
export const isRoot = process.getuid?.() === 0;

export function rootOnlyReason(): string | undefined {
  if (isRoot) return undefined;
  const reason = 'skipped: integration tests need root for mounts and loop devices';
  process.stderr.write(`${reason}\n`);
  return reason;
}
