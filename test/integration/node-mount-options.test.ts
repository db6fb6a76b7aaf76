/**
 * Staging filesystems that are copies of each other or carry a dirty journal,
 * as clones and snapshots of volumes in use do: through the real server.
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { createRequest, MiB, mountCap } from '../helpers/csi.js';
import { kubeletPaths, useNodeCleanup, useNodeRig, volumeLeftovers } from '../helpers/node.js';
import { isRoot } from '../helpers/root.js';

describe.skipIf(!isRoot)('node mount options', () => {
  const rig = useNodeRig(2048);
  const cleanup = useNodeCleanup(() => rig.scope());
  const leftovers = (id: string) => volumeLeftovers(rig.scope(), id);

  // mkfs.xfs needs 300 MiB at least.
  async function provision(name: string, cap: object, sizeBytes = 320n * MiB): Promise<string> {
    const req = createRequest(name, {
      parameters: { format: 'raw' },
      volume_capabilities: [cap],
      capacity_range: { required_bytes: String(sizeBytes) },
    });
    await rig.driver.client.controller('CreateVolume', req);
    return name;
  }
  const staging = (id: string) => kubeletPaths(rig.kubelet, id).staging;
  const stage = (id: string, cap: object, readonly = false) => {
    cleanup.staged(id, staging(id));
    return rig.driver.client.node('NodeStageVolume', {
      volume_id: id,
      staging_target_path: staging(id),
      volume_capability: cap,
      publish_context: { readonly: String(readonly) },
    });
  };
  const unstage = (id: string) => rig.driver.client.node('NodeUnstageVolume', { volume_id: id, staging_target_path: staging(id) });
  const image = (id: string) => join(rig.share.path, 'filedriver/volumes', id, 'disk.raw');
  const mountOptions = (path: string) =>
    readFileSync('/proc/self/mountinfo', 'utf8')
      .split('\n')
      .find((l) => l.split(' ')[4] === path)
      ?.split(' ')[5];

  it('stages two xfs volumes that are byte copies of each other (same UUID) on one node', async () => {
    const cap = mountCap('SINGLE_NODE_WRITER', 'xfs');
    const a = await provision('pvc-xfs-a', cap);
    const b = await provision('pvc-xfs-b', cap);
    await stage(a, cap);
    await unstage(a);
    execFileSync('cp', ['--reflink=never', '--sparse=always', image(a), image(b)]);
    await stage(a, cap);
    await stage(b, cap);
    expect(mountOptions(staging(a))).toBeDefined();
    expect(mountOptions(staging(b))).toBeDefined();
    await unstage(a);
    await unstage(b);
    expect([...leftovers(a), ...leftovers(b)]).toEqual([]);
  });

  it('stages an xfs volume again after its image was reflinked (as a snapshot or clone does)', async () => {
    const cap = mountCap('SINGLE_NODE_WRITER', 'xfs');
    const id = await provision('pvc-xfs-reflinked', cap);
    await stage(id, cap);
    await unstage(id);
    const copy = join(rig.share.path, 'reflinked.raw');
    execFileSync('cp', ['--reflink=always', image(id), copy]);
    try {
      await stage(id, cap);
      await unstage(id);
    } finally {
      rmSync(copy);
    }
    expect(leftovers(id)).toEqual([]);
  });

  it('stages read-only an ext4 image whose journal needs recovery', async () => {
    const cap = mountCap('SINGLE_NODE_WRITER', 'ext4');
    const id = await provision('pvc-dirty-ext4', cap, 64n * MiB);
    await stage(id, cap);
    await unstage(id);
    // What a copy of a mounted ext4 looks like: the journal still to be replayed.
    execFileSync('debugfs', ['-w', '-R', 'feature needs_recovery', image(id)], { stdio: 'ignore' });
    await stage(id, cap, true);
    expect(mountOptions(staging(id))).toMatch(/^ro\b/);
    await unstage(id);
    expect(leftovers(id)).toEqual([]);
  });

  it('stages read-only an xfs image whose log is dirty', async () => {
    const cap = mountCap('SINGLE_NODE_WRITER', 'xfs');
    const id = await provision('pvc-dirty-xfs', cap);
    await stage(id, cap);
    execFileSync('xfs_io', ['-x', '-c', 'pwrite 0 64k', '-c', 'fsync', '-c', 'shutdown', '-f', join(staging(id), 'f')], { stdio: 'ignore' });
    await unstage(id); // after a shutdown, the unmount leaves the log dirty
    await stage(id, cap, true);
    expect(mountOptions(staging(id))).toMatch(/^ro\b/);
    await unstage(id);
    expect(leftovers(id)).toEqual([]);
  });

  it('publishes read-only again over a writable bind a crashed publish left at the target', async () => {
    const cap = mountCap('SINGLE_NODE_WRITER', 'ext4');
    const id = await provision('pvc-half-published', cap, 64n * MiB);
    await stage(id, cap);
    const target = kubeletPaths(rig.kubelet, id).target;
    mkdirSync(target, { recursive: true });
    cleanup.published(id, target);
    execFileSync('mount', ['--bind', staging(id), target]); // the bind, without its read-only remount
    const req = { volume_id: id, staging_target_path: staging(id), target_path: target, volume_capability: cap, readonly: true };
    await rig.driver.client.node('NodePublishVolume', req);
    expect(mountOptions(target)).toMatch(/^ro\b/);
    expect(() => writeFileSync(join(target, 'x'), 'no')).toThrow(/EROFS|read-only/);
    await rig.driver.client.node('NodeUnpublishVolume', { volume_id: id, target_path: target });
    await unstage(id);
    expect(leftovers(id)).toEqual([]);
  });
});
