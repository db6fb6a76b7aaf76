/**
 * A scratch share for the demo: an xfs image loop-mounted under a temp dir, without reflinks, like the
 * NFS filers the driver is for (snapshots are then qcow2 layers).
 */
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Runner } from '../src/system/command.js';

export interface ScratchShare {
  path: string;
  remove(): Promise<void>;
}

export async function makeScratchShare(run: Runner, sizeMiB: number): Promise<ScratchShare> {
  const base = await mkdtemp(join(tmpdir(), 'filedriver-demo-'));
  const image = join(base, 'share.img');
  const path = join(base, 'share');
  await mkdir(path);
  await run(['truncate', '-s', `${sizeMiB}M`, image]);
  await run(['mkfs.xfs', '-q', '-f', '-m', 'reflink=0', image]);
  await run(['mount', '-o', 'loop', image, path]);
  return {
    path,
    async remove() {
      await run(['umount', path]);
      await rm(base, { recursive: true, force: true });
    },
  };
}
