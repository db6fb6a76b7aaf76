/**
 * The bench's "shares": sparse image files under <base>/img, formatted xfs
 * (reflink=1) or ext4 and loop-mounted at <base>/mnt/<name>, as the admin's
 * NFS mounts would be. `mount -o loop` uses a buffered loop device, so the
 * shares sit on the host's page cache and disk.
 */
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import type { Cleanup } from './cleanup.js';
import { sh } from './sh.js';

export type ShareKind = 'xfs' | 'ext4';

export async function makeShare(
  base: string,
  name: string,
  kind: ShareKind,
  sizeMiB: number,
  cleanup: Cleanup,
  imageDir = join(base, 'img'),
): Promise<string> {
  const image = join(imageDir, `${name}.img`);
  const path = join(base, 'mnt', name);
  await mkdir(imageDir, { recursive: true });
  await mkdir(path, { recursive: true });
  await sh(['truncate', '-s', `${sizeMiB}M`, image]);
  if (kind === 'xfs') await sh(['mkfs.xfs', '-q', '-f', '-m', 'reflink=1', image]);
  // Inode tables written now: lazy init would keep zeroing them in the background during the runs.
  else await sh(['mkfs.ext4', '-q', '-F', '-E', 'lazy_itable_init=0,lazy_journal_init=0', image]);
  await sh(['mount', '-o', 'loop', image, path]);
  cleanup.add(`share ${name}`, async () => {
    await sh(['umount', path]).catch(() => sh(['umount', '-l', path]));
  });
  return path;
}

/**
 * An xfs share whose image lives in RAM (tmpfs): dropping the page cache empties every cache
 * between the pod and the share, and none of the share's own, so O_DIRECT figures compare the
 * driver's I/O stack with the share's own speed, undisturbed by the host disk (and by whatever
 * else runs on the machine). The harshest floor for the driver: per-request costs show fully.
 */
export async function makeRamShare(base: string, name: string, sizeMiB: number, cleanup: Cleanup): Promise<string> {
  const ram = join(base, 'img', 'ram');
  await mkdir(ram, { recursive: true });
  await sh(['mount', '-t', 'tmpfs', '-o', `size=${sizeMiB + 64}m`, 'fdbench-ram', ram]);
  cleanup.add('tmpfs for the RAM share', async () => {
    await sh(['umount', ram]).catch(() => sh(['umount', '-l', ram]));
  });
  return makeShare(base, name, 'xfs', sizeMiB, cleanup, ram);
}
