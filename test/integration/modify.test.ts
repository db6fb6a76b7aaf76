/** ControllerModifyVolume: moving a volume between mounts and converting its format, keeping its id and data. */
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { status } from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { codeOf } from '../helpers/client.js';
import { createRequest, mountCap } from '../helpers/csi.js';
import { registerNodes } from '../helpers/nodes.js';
import { isRoot, rootOnlyReason } from '../helpers/root.js';
import { makeScratch, type Scratch } from '../helpers/scratch.js';
import { startDriver, type Driver } from '../helpers/server.js';
import { ifMade } from '../helpers/teardown.js';

const io = (image: string, format: string, cmd: string) => execFileSync('qemu-io', ['-f', format, '-c', cmd, image], { encoding: 'utf8' });

describe.skipIf(!isRoot)('ControllerModifyVolume', () => {
  let a: Scratch;
  let b: Scratch;
  let driver: Driver;
  const image = (s: Scratch, id: string, f: string) => join(s.path, 'filedriver/volumes', id, `disk.${f}`);
  const modify = (volume_id: string, mutable_parameters: Record<string, string>) =>
    driver.client.controller('ControllerModifyVolume', { volume_id, mutable_parameters });

  beforeAll(async () => {
    rootOnlyReason();
    a = makeScratch('xfs', 512);
    b = makeScratch('ext4', 512);
    driver = await startDriver({ mounts: { a: a.path, b: b.path } });
    // A node Kubernetes may publish to, running no plugin here.
    await registerNodes([a.path, b.path], ['n1']);
  });
  afterAll(async () => {
    await ifMade(driver)?.stop();
    ifMade(a)?.cleanup();
    ifMade(b)?.cleanup();
  });

  it('moves a volume to another mount, keeping its id and data', async () => {
    await driver.client.controller('CreateVolume', createRequest('pvc-move', { parameters: { mounts: 'a' } }));
    io(image(a, 'pvc-move', 'qcow2'), 'qcow2', 'write -P 0x42 0 1M');
    await modify('pvc-move', { mount: 'b' });
    expect(existsSync(join(a.path, 'filedriver/volumes/pvc-move'))).toBe(false);
    expect(io(image(b, 'pvc-move', 'qcow2'), 'qcow2', 'read -P 0x42 0 1M')).not.toMatch(/failed/);
    const got = await driver.client.controller('ControllerGetVolume', { volume_id: 'pvc-move' });
    expect(got.volume.volume_context.mount).toBe('b');
    await modify('pvc-move', { mount: 'b' }); // already there: a no-op
  });

  it('converts qcow2 to raw in place, flattening a linked clone', async () => {
    await driver.client.controller('CreateSnapshot', { name: 'snap-m', source_volume_id: 'pvc-move' });
    await driver.client.controller(
      'CreateVolume',
      createRequest('pvc-conv', { parameters: { mounts: 'b' }, volume_content_source: { snapshot: { snapshot_id: 'snap-m' } } }),
    );
    await modify('pvc-conv', { format: 'raw' });
    const meta = JSON.parse(readFileSync(join(b.path, 'filedriver/volumes/pvc-conv/volume.json'), 'utf8'));
    expect(meta).toMatchObject({ format: 'raw', backing: null });
    expect(existsSync(image(b, 'pvc-conv', 'qcow2'))).toBe(false);
    expect(io(image(b, 'pvc-conv', 'raw'), 'raw', 'read -P 0x42 0 1M')).not.toMatch(/failed/);
    // The clone no longer depends on the snapshot; its source does (the snapshot is a layer under
    // it), so deleting the snapshot merges it into the source in the background and removes it.
    await driver.client.controller('DeleteSnapshot', { snapshot_id: 'snap-m' });
    const dir = join(b.path, 'filedriver/snapshots/snap-m');
    for (let i = 0; i < 100 && existsSync(dir); i++) await new Promise((r) => setTimeout(r, 100));
    expect(existsSync(dir)).toBe(false);
    expect(JSON.parse(readFileSync(join(b.path, 'filedriver/volumes/pvc-move/volume.json'), 'utf8')).backing).toBeNull();
  });

  it('converts only while detached, moves a published qcow2 volume through its node, and rejects unknown parameters', async () => {
    await driver.client.controller('ControllerPublishVolume', { volume_id: 'pvc-move', node_id: 'n1', volume_capability: mountCap() });
    const err = await modify('pvc-move', { format: 'raw' }).catch((e: unknown) => e as { code: number; details: string });
    expect(err.code).toBe(status.FAILED_PRECONDITION);
    expect(err.details).toMatch(/published to n1.*only while detached/);
    // A move waits for the node serving it (n1 is no real node here): ABORTED, retried by the resizer.
    expect(await codeOf(modify('pvc-move', { mount: 'a' }))).toBe(status.ABORTED);
    expect(await codeOf(modify('pvc-move', { mount: 'b' }))).toBe(status.ABORTED); // a started move is finished first
    await driver.client.controller('ControllerUnpublishVolume', { volume_id: 'pvc-move', node_id: 'n1' });
    // Detached, nothing writes the source: the move finishes without a node.
    await modify('pvc-move', { mount: 'a' });
    expect(existsSync(join(b.path, 'filedriver/volumes/pvc-move'))).toBe(false);
    expect(io(image(a, 'pvc-move', 'qcow2'), 'qcow2', 'read -P 0x42 0 1M')).not.toMatch(/failed/);
    expect(await codeOf(modify('pvc-move', { size: '1' }))).toBe(status.INVALID_ARGUMENT);
    expect(await codeOf(modify('pvc-move', { mount: 'nowhere' }))).toBe(status.INVALID_ARGUMENT);
    expect(await codeOf(modify('pvc-move', { format: 'vmdk' }))).toBe(status.INVALID_ARGUMENT);
    expect(await codeOf(modify('nope', { mount: 'a' }))).toBe(status.NOT_FOUND);
  });

  it('honours mutable parameters at creation', async () => {
    const res = await driver.client.controller('CreateVolume', { ...createRequest('pvc-vac'), mutable_parameters: { mount: 'b', format: 'raw' } });
    expect(res.volume.volume_context).toEqual({ format: 'raw', mount: 'b' });
  });
});
