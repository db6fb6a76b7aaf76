/**
 * The node service under attack (issue 16): symlinks planted under the kubelet
 * directory, paths the driver never published to, read-only publishes asked to
 * be writable, mount flags that change the kind of mount. Each decoy lies
 * outside the kubelet directory, like /etc, and must stay exactly as it was.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { status } from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { codeOf } from '../helpers/client.js';
import { blockCap, createRequest, MiB, mountCap } from '../helpers/csi.js';
import { kubeletPaths, leftovers, useNodeRig } from '../helpers/node.js';
import { isRoot } from '../helpers/root.js';
import { ifMade } from '../helpers/teardown.js';

const mounted = (path: string) =>
  readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .some((l) => l.split(' ')[4] === path);
const mountOptions = (path: string) =>
  readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .find((l) => l.split(' ')[4] === path)
    ?.split(' ')[5]
    ?.split(',');
/** blkid -p: exit 2 means no signature at all (the image was never formatted). */
const blank = (file: string) => spawnSync('blkid', ['-p', file]).status === 2;

describe.skipIf(!isRoot)('node under attack', () => {
  const rig = useNodeRig(1024);
  let decoy: string;
  let foreign: string;
  const snapshot = () =>
    JSON.stringify({ entries: readdirSync(decoy).sort(), file: readFileSync(join(decoy, 'passwd'), 'utf8'), foreign: mounted(foreign) });
  let before: string;

  beforeAll(() => {
    // An /etc-like directory with a file, a directory and a foreign filesystem mounted in it.
    decoy = mkdtempSync(join(tmpdir(), 'fdtest-decoy-'));
    writeFileSync(join(decoy, 'passwd'), 'root:x:0:0\n');
    mkdirSync(join(decoy, 'ssl'));
    foreign = join(decoy, 'mnt');
    mkdirSync(foreign);
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=1m', 'fdtest-foreign', foreign]);
    symlinkSync(decoy, join(rig.kubelet, 'evil'));
    mkdirSync(join(rig.kubelet, 'pods'), { recursive: true });
    symlinkSync(decoy, join(rig.kubelet, 'pods', 'p-link'));
    before = snapshot();
  });
  afterAll(() => {
    if (ifMade(decoy) === undefined) return;
    if (mounted(foreign)) execFileSync('umount', [foreign]);
    rmSync(decoy, { recursive: true, force: true });
  });

  const node = (method: string, req: object) => rig.driver.client.node(method, req);
  async function volume(name: string, cap: object, format = 'raw') {
    await rig.driver.client.controller(
      'CreateVolume',
      createRequest(name, { volume_capabilities: [cap], parameters: { format }, capacity_range: { required_bytes: String(64n * MiB) } }),
    );
    return { id: name, image: join(rig.share.path, 'filedriver/volumes', name, `disk.${format}`), ...kubeletPaths(rig.kubelet, name) };
  }
  const stage = (id: string, staging: string, cap: object, readonly = false) =>
    node('NodeStageVolume', { volume_id: id, staging_target_path: staging, volume_capability: cap, publish_context: { readonly: String(readonly) } });
  const publish = (id: string, staging: string, target: string, cap: object, readonly = false) =>
    node('NodePublishVolume', { volume_id: id, staging_target_path: staging, target_path: target, volume_capability: cap, readonly });

  it('refuses to stage through a link, and neither formats the volume nor touches the decoy', async () => {
    const v = await volume('pvc-att-stage', mountCap());
    for (const staging of [
      join(rig.kubelet, 'evil', 'globalmount'),
      join(rig.kubelet, 'pods', 'p-link', 'vol', 'globalmount'),
      join(rig.kubelet, 'evil'),
    ]) {
      expect(await codeOf(stage(v.id, staging, mountCap()))).toBe(status.INVALID_ARGUMENT);
    }
    expect(blank(v.image)).toBe(true);
    expect(snapshot()).toBe(before);
    expect(leftovers(v.id)).toEqual([]);
  });

  it('refuses to publish a filesystem or a block device through a link, creating nothing outside', async () => {
    const fs = await volume('pvc-att-fs', mountCap());
    await stage(fs.id, fs.staging, mountCap());
    for (const target of [
      join(rig.kubelet, 'evil', 'x'),
      join(rig.kubelet, 'pods', 'p-link', 'volumes', 'x', 'mount'),
      join(rig.kubelet, 'evil', 'ssl'),
    ]) {
      expect(await codeOf(publish(fs.id, fs.staging, target, mountCap()))).toBe(status.INVALID_ARGUMENT);
    }
    const blk = await volume('pvc-att-blk', blockCap());
    await stage(blk.id, blk.staging, blockCap());
    for (const target of [join(rig.kubelet, 'evil', 'dev'), join(rig.kubelet, 'pods', 'p-link', 'dev'), join(rig.kubelet, 'evil', 'passwd')]) {
      expect(await codeOf(publish(blk.id, blk.staging, target, blockCap()))).toBe(status.INVALID_ARGUMENT);
    }
    expect(snapshot()).toBe(before);
    for (const v of [fs, blk]) await node('NodeUnstageVolume', { volume_id: v.id, staging_target_path: v.staging });
    expect([...leftovers(fs.id), ...leftovers(blk.id)]).toEqual([]);
  });

  it('refuses to unpublish, unstage, stat or expand through a link, leaving the file, the directory and the foreign mount', async () => {
    for (const what of ['passwd', 'ssl', 'mnt']) {
      const path = join(rig.kubelet, 'evil', what);
      expect(await codeOf(node('NodeUnpublishVolume', { volume_id: 'whatever', target_path: path }))).toBe(status.INVALID_ARGUMENT);
      expect(await codeOf(node('NodeUnstageVolume', { volume_id: 'whatever', staging_target_path: path }))).toBe(status.INVALID_ARGUMENT);
      expect(await codeOf(node('NodeGetVolumeStats', { volume_id: 'whatever', volume_path: path }))).toBe(status.INVALID_ARGUMENT);
      const expand = { volume_id: 'whatever', volume_path: path, capacity_range: { required_bytes: String(128n * MiB) } };
      expect(await codeOf(node('NodeExpandVolume', expand))).toBe(status.INVALID_ARGUMENT);
    }
    expect(snapshot()).toBe(before);
  });

  it('answers OK to unpublish and unstage of paths it never used, and touches nothing there', async () => {
    const pod = join(rig.kubelet, 'pods', 'p9');
    mkdirSync(join(pod, 'data'), { recursive: true });
    writeFileSync(join(pod, 'important.txt'), 'keep');
    const mnt = join(pod, 'foreign');
    mkdirSync(mnt);
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=1m', 'fdtest-foreign', mnt]);
    try {
      for (const target of ['important.txt', 'data', 'foreign']) {
        expect(await codeOf(node('NodeUnpublishVolume', { volume_id: 'whatever', target_path: join(pod, target) }))).toBe('OK');
        expect(await codeOf(node('NodeUnstageVolume', { volume_id: 'never-staged', staging_target_path: join(pod, target) }))).toBe('OK');
      }
      expect(readFileSync(join(pod, 'important.txt'), 'utf8')).toBe('keep');
      expect(existsSync(join(pod, 'data'))).toBe(true);
      expect(mounted(mnt)).toBe(true);
    } finally {
      execFileSync('umount', [mnt]);
      rmSync(pod, { recursive: true, force: true });
    }
  });

  it('refuses a target that is the staging path or inside it', async () => {
    const v = await volume('pvc-att-same', mountCap());
    await stage(v.id, v.staging, mountCap());
    expect(await codeOf(publish(v.id, v.staging, v.staging, mountCap()))).toBe(status.INVALID_ARGUMENT);
    expect(await codeOf(publish(v.id, v.staging, join(v.staging, 'inner'), mountCap()))).toBe(status.INVALID_ARGUMENT);
    expect(await codeOf(node('NodeUnstageVolume', { volume_id: v.id, staging_target_path: v.staging }))).toBe('OK');
    expect(leftovers(v.id)).toEqual([]);
  });

  it('keeps a read-only publish read-only: rw is refused up front, and the mount cannot be written', async () => {
    const v = await volume('pvc-att-ro', mountCap());
    await stage(v.id, v.staging, mountCap());
    const withRw = { mount: { fs_type: 'ext4', mount_flags: ['rw'] }, access_mode: { mode: 'SINGLE_NODE_WRITER' } };
    expect(await codeOf(publish(v.id, v.staging, v.target, withRw, true))).toBe(status.INVALID_ARGUMENT);
    expect(existsSync(v.target)).toBe(false);
    await publish(v.id, v.staging, v.target, mountCap(), true);
    expect(mountOptions(v.target)).toContain('ro');
    const touch = spawnSync('touch', [join(v.target, 'written')], { encoding: 'utf8' });
    expect(touch.status).not.toBe(0);
    expect(touch.stderr).toMatch(/Read-only file system/);
    await node('NodeUnpublishVolume', { volume_id: v.id, target_path: v.target });
    // A reader-only mode is read-only whatever the flags: rw contradicts it.
    const readerRw = { mount: { fs_type: 'ext4', mount_flags: ['rw'] }, access_mode: { mode: 'SINGLE_NODE_READER_ONLY' } };
    expect(await codeOf(publish(v.id, v.staging, v.target, readerRw))).toBe(status.INVALID_ARGUMENT);
    await node('NodeUnstageVolume', { volume_id: v.id, staging_target_path: v.staging });
    expect(leftovers(v.id)).toEqual([]);
  });

  it.each([['bind'], ['remount'], ['X-mount.mkdir']])('refuses mount flag %s at stage before formatting anything', async (flag) => {
    const v = await volume(`pvc-att-flag-${flag.toLowerCase().replace(/\W/g, '')}`, mountCap());
    const cap = { mount: { fs_type: 'ext4', mount_flags: [flag] }, access_mode: { mode: 'SINGLE_NODE_WRITER' } };
    expect(await codeOf(stage(v.id, v.staging, cap))).toBe(status.INVALID_ARGUMENT);
    expect(blank(v.image)).toBe(true);
    expect(existsSync(v.staging)).toBe(false);
    expect(leftovers(v.id)).toEqual([]);
  });

  it('unpublishes a target directory that holds files with OK, leaving the directory and its files', async () => {
    const v = await volume('pvc-att-full', mountCap());
    await stage(v.id, v.staging, mountCap());
    mkdirSync(v.target, { recursive: true });
    writeFileSync(join(v.target, 'under-the-mount'), 'kept');
    await publish(v.id, v.staging, v.target, mountCap());
    expect(mounted(v.target)).toBe(true);
    expect(await codeOf(node('NodeUnpublishVolume', { volume_id: v.id, target_path: v.target }))).toBe('OK');
    expect(mounted(v.target)).toBe(false);
    expect(readFileSync(join(v.target, 'under-the-mount'), 'utf8')).toBe('kept');
    await node('NodeUnstageVolume', { volume_id: v.id, staging_target_path: v.staging });
    expect(leftovers(v.id)).toEqual([]);
  });
});
