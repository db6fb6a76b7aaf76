/**
 * The mounts a node offers in NodeGetInfo: the shares it is *configured* to
 * have, not the ones healthy right now. kubelet calls NodeGetInfo once, when
 * the plugin registers, and turns the keys into Node labels that it never
 * removes; a key from a health check would be frozen at whatever the share's
 * state was at registration (an NFS mount racing the kubelet would never get
 * its key). So topology says "this node has that share", and health is
 * answered where it changes: NodeStageVolume (UNAVAILABLE while the share is
 * down, which kubelet retries), capacity and the controller's placement.
 *
 * A share is configured on a node when its mountpoint directory exists there:
 * the admin (fstab, a systemd mount unit, autofs) or the chart (nfs mounts)
 * makes it. Its parent is read with readdir, which never touches the share
 * itself: a stat of a hard-mounted NFS mountpoint whose server is gone hangs.
 */
import { readdir } from 'node:fs/promises';
import { basename, dirname } from 'node:path';
import type { MountConfig } from '../config.js';

export async function configuredMounts(mounts: readonly MountConfig[]): Promise<string[]> {
  const listings = new Map<string, Promise<Set<string>>>();
  const listing = (dir: string) => {
    let names = listings.get(dir);
    if (names === undefined) {
      names = readdir(dir).then(
        (entries) => new Set(entries),
        () => new Set<string>(), // no parent: no share below it on this node
      );
      listings.set(dir, names);
    }
    return names;
  };
  const present = await Promise.all(
    mounts.map(async (m) => {
      const path = m.path.replace(/(.)\/+$/, '$1');
      return (await listing(dirname(path))).has(basename(path));
    }),
  );
  return mounts.filter((_, i) => present[i]).map((m) => m.name);
}
