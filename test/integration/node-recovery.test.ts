/**
 * The node service when its record and the machine disagree: a loop device
 * detached behind its back (reboot, admin), a device still held open at
 * unstage, an export left by a crash before its record was written.
 */
import { execFileSync } from 'node:child_process';
import { closeSync, existsSync, fsyncSync, openSync, readFileSync, readSync, writeSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { status } from '@grpc/grpc-js';
import pino from 'pino';
import { describe, expect, it } from 'vitest';
import { StageState, volumeTag } from '../../src/node/state.js';
import { DataPlane } from '../../src/system/data-plane.js';
import { findQemu } from '../../src/system/qemu-tools.js';
import { makeRunner } from '../../src/system/command.js';
import { makeQemuExports } from '../../src/system/qemu-export.js';
import { codeOf } from '../helpers/client.js';
import { blockCap, createRequest, MiB } from '../helpers/csi.js';
import { kubeletPaths, useNodeCleanup, useNodeRig, volumeLeftovers } from '../helpers/node.js';
import { isRoot } from '../helpers/root.js';

describe.skipIf(!isRoot)('node service recovery', () => {
  const rig = useNodeRig(1024);
  const stateDir = () => join(rig.kubelet, 'plugins/filedriver.dev');
  const leftFor = (id: string) => volumeLeftovers(rig.scope(), id);
  const cleanup = useNodeCleanup(() => rig.scope());

  async function provision(name: string, format: string, cap: object): Promise<string> {
    await rig.driver.client.controller('CreateVolume', createRequest(name, { parameters: { format }, volume_capabilities: [cap] }));
    return name;
  }
  const paths = (id: string) => kubeletPaths(rig.kubelet, id);
  const stage = (id: string, cap: object) => {
    cleanup.staged(id, paths(id).staging);
    return rig.driver.client.node('NodeStageVolume', { volume_id: id, staging_target_path: paths(id).staging, volume_capability: cap });
  };
  const unstage = (id: string) => rig.driver.client.node('NodeUnstageVolume', { volume_id: id, staging_target_path: paths(id).staging });
  const publishBlock = (id: string) => {
    cleanup.published(id, paths(id).device);
    return rig.driver.client.node('NodePublishVolume', {
      volume_id: id,
      staging_target_path: paths(id).staging,
      target_path: paths(id).device,
      volume_capability: blockCap(),
    });
  };
  const unpublishBlock = (id: string) => rig.driver.client.node('NodeUnpublishVolume', { volume_id: id, target_path: paths(id).device });
  const record = (id: string) => JSON.parse(readFileSync(join(stateDir(), 'volumes', id, 'stage.json'), 'utf8'));
  const image = (id: string, format = 'raw') => join(rig.share.path, 'filedriver/volumes', id, `disk.${format}`);
  const loopsOf = (file: string) => execFileSync('losetup', ['-j', file], { encoding: 'utf8' }).trim();
  const mountedAt = (path: string) =>
    readFileSync('/proc/self/mountinfo', 'utf8')
      .split('\n')
      .some((l) => l.split(' ')[4] === path);

  it('stages afresh after its loop device was detached behind its back, and never publishes a stale device', async () => {
    const cap = blockCap();
    const a = await provision('pvc-stale-a', 'raw', cap);
    const b = await provision('pvc-stale-b', 'raw', cap);
    await stage(a, cap);
    const old = record(a).device as string;
    execFileSync('losetup', ['-d', old]);
    // Another volume may now get the same device number.
    await stage(b, cap);
    expect(await codeOf(publishBlock(a))).toBe(status.FAILED_PRECONDITION);
    expect(mountedAt(paths(a).device)).toBe(false);

    await stage(a, cap);
    expect(loopsOf(image(a))).toContain(record(a).device as string);
    await publishBlock(a);
    const data = randomBytes(Number(MiB));
    const fd = openSync(paths(a).device, 'r+');
    writeSync(fd, data, 0, data.length, 0);
    fsyncSync(fd);
    closeSync(fd);
    const back = Buffer.alloc(data.length);
    const img = openSync(image(a), 'r');
    readSync(img, back, 0, back.length, 0);
    closeSync(img);
    expect(back.equals(data)).toBe(true); // a's device, not b's
    await unpublishBlock(a);
    await unstage(a);
    await unstage(b);
    expect(leftFor(a)).toEqual([]);
    expect(leftFor(b)).toEqual([]);
  });

  it('answers ABORTED while a loop device is still open, keeping its record and export, and finishes on the retry', async () => {
    const cap = blockCap();
    const id = await provision('pvc-held', 'qcow2', cap);
    await stage(id, cap);
    const { device, export: exp } = record(id) as { device: string; export: { exportFile: string } };
    const fd = openSync(device, 'r');
    try {
      expect(await codeOf(unstage(id))).toBe(status.ABORTED);
      expect(record(id).device).toBe(device);
      expect(mountedAt(exp.exportFile)).toBe(true); // the export still serves the open device
    } finally {
      closeSync(fd);
    }
    await unstage(id);
    expect(existsSync(join(stateDir(), 'volumes', id))).toBe(false);
    expect(leftFor(id)).toEqual([]);
  });

  it('stops an export a crash left unrecorded (started, record not yet written) when unstaging', async () => {
    const id = await provision('pvc-unrecorded', 'qcow2', blockCap());
    cleanup.staged(id, paths(id).staging);
    const state = new StageState(stateDir());
    const silent = pino({ level: 'silent' });
    const run = makeRunner(silent, { qemu: findQemu(undefined) });
    const h = await makeQemuExports(new DataPlane(state.planeDir, 'managed', run, silent), run, silent).start(image(id, 'qcow2'), {
      format: 'qcow2',
      readOnly: false,
      stateDir: state.exportDir(id),
      tag: volumeTag(id),
    });
    await state.write({
      volumeId: id,
      image: image(id, 'qcow2'),
      format: 'qcow2',
      mount: 's',
      stagingPath: paths(id).staging,
      access: 'block',
      fsType: undefined,
      readOnly: false,
      capability: 'block:SINGLE_NODE_WRITER:false',
      export: undefined,
      loopFile: undefined,
      device: undefined,
      mounted: false,
      stagedAt: new Date().toISOString(),
      targets: [],
    });
    await unstage(id);
    expect(mountedAt(h.exportFile)).toBe(false);
    expect(existsSync(state.exportDir(id))).toBe(false);
    expect(existsSync(join(stateDir(), 'volumes', id))).toBe(false);
    expect(leftFor(id)).toEqual([]);
  });
});
