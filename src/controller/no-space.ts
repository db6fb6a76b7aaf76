/** What running out of room on a share means to the use cases that build volumes and snapshots. */
import { exhausted } from '../domain/errors.js';
import { CommandFailed } from '../system/command.js';

/**
 * Running out of space — a tool saying so, or a write failing with ENOSPC or EDQUOT — is
 * RESOURCE_EXHAUSTED, not an internal failure. `what` names the object being built.
 */
export function noSpace(e: unknown, what: string): unknown {
  const full =
    (e instanceof CommandFailed && /No space left on device|Disk quota exceeded/.test(e.stderr)) ||
    ['ENOSPC', 'EDQUOT'].includes((e as NodeJS.ErrnoException | undefined)?.code ?? '');
  return full ? exhausted(`no room left for ${what} while building it: ${e instanceof Error ? e.message : String(e)}`) : e;
}
