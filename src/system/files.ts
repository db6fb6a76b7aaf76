/** Copying image files cheaply where the filesystem allows it. */
import { rm } from 'node:fs/promises';
import { CommandFailed, type Runner } from './command.js';

export interface Files {
  /**
   * A reflink copy (shared extents, FICLONE): O(1) in the data size. False
   * when the filesystem cannot (different filesystems, no reflink support).
   */
  reflink(source: string, target: string): Promise<boolean>;
}

export function makeFiles(run: Runner): Files {
  return {
    async reflink(source, target) {
      try {
        await run(['cp', '--reflink=always', '--', source, target], { timeoutMs: 120_000 });
        return true;
      } catch (e) {
        if (e instanceof CommandFailed) {
          await rm(target, { force: true });
          return false;
        }
        throw e;
      }
    },
  };
}
