/** ControllerPublish/Unpublish: a single-node volume is never attached to two nodes. */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { status } from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { codeOf } from '../helpers/client.js';
import { blockCap, createRequest, mountCap } from '../helpers/csi.js';
import { registerNodes } from '../helpers/nodes.js';
import { isRoot, rootOnlyReason } from '../helpers/root.js';
import { makeScratch, type Scratch } from '../helpers/scratch.js';
import { startDriver, type Driver } from '../helpers/server.js';
import { ifMade } from '../helpers/teardown.js';

describe.skipIf(!isRoot)('attachment fencing', () => {
  let share: Scratch;
  let driver: Driver;
  const publish = (volume_id: string, node_id: string, cap: object = mountCap(), readonly = false) =>
    driver.client.controller('ControllerPublishVolume', { volume_id, node_id, volume_capability: cap, readonly });
  const meta = (id: string) => JSON.parse(readFileSync(join(share.path, 'filedriver/volumes', id, 'volume.json'), 'utf8'));

  beforeAll(async () => {
    rootOnlyReason();
    share = makeScratch('tmpfs', 256);
    driver = await startDriver({ mounts: { s: share.path } });
    await registerNodes([share.path], ['node-1', 'node-2', 'node-3']);
    // Down for a week: stale, but a node Kubernetes may still attach to.
    await registerNodes([share.path], ['node-asleep'], new Date(Date.now() - 7 * 24 * 3600_000));
    await driver.client.controller('CreateVolume', createRequest('pvc-rwo'));
    await driver.client.controller('CreateVolume', createRequest('pvc-rox', { volume_capabilities: [mountCap('MULTI_NODE_READER_ONLY')] }));
    await driver.client.controller(
      'CreateVolume',
      createRequest('pvc-rwx', { volume_capabilities: [blockCap('MULTI_NODE_MULTI_WRITER')], parameters: { format: 'raw' } }),
    );
  });
  afterAll(async () => {
    await ifMade(driver)?.stop();
    ifMade(share)?.cleanup();
  });

  it('records the node and returns what the node needs', async () => {
    const res = await publish('pvc-rwo', 'node-1');
    expect(res.publish_context).toEqual({ format: 'qcow2', mount: 's', readonly: 'false' });
    expect(await publish('pvc-rwo', 'node-1')).toEqual(res);
    expect(meta('pvc-rwo').publications).toEqual([{ node: 'node-1', mode: 'SINGLE_NODE_WRITER', readonly: false }]);
  });

  it('refuses a second node for a single-node volume, naming the holder', async () => {
    const err = await publish('pvc-rwo', 'node-2').catch((e: unknown) => e as { code: number; details: string });
    expect(err.code).toBe(status.FAILED_PRECONDITION);
    expect(err.details).toMatch(/published to node node-1/);
  });

  it('refuses to delete a published volume, and unpublishes idempotently', async () => {
    expect(await codeOf(driver.client.controller('DeleteVolume', { volume_id: 'pvc-rwo' }))).toBe(status.FAILED_PRECONDITION);
    const listed = await driver.client.controller('ListVolumes', {});
    const entry = listed.entries.find((e: any) => e.volume.volume_id === 'pvc-rwo');
    expect(entry.status.published_node_ids).toEqual(['node-1']);
    await driver.client.controller('ControllerUnpublishVolume', { volume_id: 'pvc-rwo', node_id: 'node-1' });
    await driver.client.controller('ControllerUnpublishVolume', { volume_id: 'pvc-rwo', node_id: 'node-1' });
    await driver.client.controller('ControllerUnpublishVolume', { volume_id: 'gone', node_id: 'node-1' });
    expect(meta('pvc-rwo').publications).toEqual([]);
    await publish('pvc-rwo', 'node-2');
    await driver.client.controller('ControllerUnpublishVolume', { volume_id: 'pvc-rwo', node_id: 'node-2' });
  });

  it('allows several nodes for multi-node readers and raw block multi-writers', async () => {
    await publish('pvc-rox', 'node-1', mountCap('MULTI_NODE_READER_ONLY'), true);
    await publish('pvc-rox', 'node-2', mountCap('MULTI_NODE_READER_ONLY'), true);
    await publish('pvc-rwx', 'node-1', blockCap('MULTI_NODE_MULTI_WRITER'));
    await publish('pvc-rwx', 'node-2', blockCap('MULTI_NODE_MULTI_WRITER'));
    expect(meta('pvc-rwx').publications.map((p: { node: string }) => p.node)).toEqual(['node-1', 'node-2']);
    // A single-node claim on a volume other nodes share is still refused.
    expect(await codeOf(publish('pvc-rwx', 'node-3', blockCap('SINGLE_NODE_WRITER')))).toBe(status.FAILED_PRECONDITION);
  });

  it('publishes to a registered node whose heartbeat stopped long ago', async () => {
    await publish('pvc-rox', 'node-asleep', mountCap('MULTI_NODE_READER_ONLY'), true);
    expect(meta('pvc-rox').publications.map((p: { node: string }) => p.node)).toContain('node-asleep');
  });

  it("registers the driver's own node on its share before serving", async () => {
    const record = JSON.parse(readFileSync(join(share.path, 'filedriver/nodes/node-a.json'), 'utf8'));
    expect(record).toMatchObject({ schema: 1, node: 'node-a', mounts: ['s'], staged: [] });
    expect(Date.parse(record.heartbeatAt)).not.toBeNaN();
    expect((await publish('pvc-rox', 'node-a', mountCap('MULTI_NODE_READER_ONLY'), true)).publish_context).toMatchObject({ mount: 's' });
  });

  it.each([
    ['unknown volume', { volume_id: 'nope', node_id: 'n', volume_capability: mountCap() }, status.NOT_FOUND],
    ['a node that never registered', { volume_id: 'pvc-rwo', node_id: 'node-never', volume_capability: mountCap() }, status.NOT_FOUND],
    ['no node', { volume_id: 'pvc-rwo', node_id: '', volume_capability: mountCap() }, status.INVALID_ARGUMENT],
    ['no capability', { volume_id: 'pvc-rwo', node_id: 'n' }, status.INVALID_ARGUMENT],
    ['bad id', { volume_id: '../x', node_id: 'n', volume_capability: mountCap() }, status.INVALID_ARGUMENT],
    [
      'multi-writer filesystem',
      { volume_id: 'pvc-rwx', node_id: 'n', volume_capability: mountCap('MULTI_NODE_MULTI_WRITER') },
      status.INVALID_ARGUMENT,
    ],
  ])('rejects publishing with %s', async (_n, req, code) => {
    expect(await codeOf(driver.client.controller('ControllerPublishVolume', req))).toBe(code);
  });
});
