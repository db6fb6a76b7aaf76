/**
 * A test-only hook: `FILEDRIVER_CRASH_AT=<step>` kills the process (SIGKILL,
 * as a node failure or OOM kill would) when it reaches that step, so the
 * tests can prove every multi-step operation is finished or undone after a
 * restart. Unset in production; a step name that is never reached does nothing.
 */
export function crashPoint(step: string): void {
  if (process.env['FILEDRIVER_CRASH_AT'] === step) process.kill(process.pid, 'SIGKILL');
}
