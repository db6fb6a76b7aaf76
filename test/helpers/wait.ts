/**
 * Waiting for what a test asserts, instead of assuming how long it takes: on a
 * busy machine a killed process stays runnable, and the kernel frees a loop
 * device, for as long as the scheduler pleases.
 */
import { readFileSync } from 'node:fs';

/**
 * Polls `check` until it holds. The bound only keeps a broken run from
 * hanging until the test's timeout; it is not a claim about speed, so it is
 * generous (and below vitest's 60 s test timeout, so the message is ours).
 */
export async function until(what: string, check: () => boolean | Promise<boolean>, boundMs = 45_000): Promise<void> {
  const deadline = Date.now() + boundMs;
  for (let delay = 5; ; delay = Math.min(delay * 2, 100)) {
    if (await check()) return;
    if (Date.now() > deadline) throw new Error(`gave up waiting, after ${boundMs} ms, until ${what}`);
    await new Promise((r) => setTimeout(r, delay));
  }
}

/** The process has exited: no such pid, or a zombie (its resources are released; reaping is its parent's business). */
export function exited(pid: number): boolean {
  try {
    // "pid (comm) S ...": comm may hold spaces and parentheses, the state follows the last ')'.
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return /^[ZX]/.test(stat.slice(stat.lastIndexOf(')') + 2));
  } catch {
    return true;
  }
}

/** Waits until `pid` has exited (see `exited`). */
export const untilExited = (pid: number): Promise<void> => until(`process ${pid} has exited`, () => exited(pid));
