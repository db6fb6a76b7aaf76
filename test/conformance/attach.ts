/**
 * ControllerPublishVolume, ControllerUnpublishVolume, ControllerExpandVolume and
 * ControllerModifyVolume (CSI spec): repeats, incompatible repeats, other
 * nodes, volumes in use, sizes, mutable parameters.
 */
import { describe, expect, it } from 'vitest';
import { codeName, mountCap, need, SIZE, type Env } from './harness.js';

export function attachRules(env: Env): void {
  describe('ControllerPublishVolume and ControllerUnpublishVolume', () => {
    const publish = (volume_id: string, node_id: string, cap: object = mountCap(), readonly = false) => {
      env.trackControllerPublish(volume_id, node_id);
      return env.controller('ControllerPublishVolume', { volume_id, node_id, volume_capability: cap, readonly });
    };

    it('publishes to a node, and answers a repeat with the same publish_context', async ({ skip }) => {
      need(env, skip, 'CREATE_DELETE_VOLUME', 'PUBLISH_UNPUBLISH_VOLUME');
      const [node = ''] = env.nodes(1, skip);
      const v = await env.createVolume(env.name('pub'));
      const a = await publish(v.volume_id, node);
      expect(await publish(v.volume_id, node)).toEqual(a);
    });

    it('answers NOT_FOUND for a node that does not exist, OK for a registered one', async ({ skip }) => {
      need(env, skip, 'CREATE_DELETE_VOLUME', 'PUBLISH_UNPUBLISH_VOLUME');
      const [node = ''] = env.nodes(1, skip);
      const v = await env.createVolume(env.name('pub-node'));
      expect(await codeName(publish(v.volume_id, env.name('no-such-node')))).toBe('NOT_FOUND');
      expect(await codeName(publish(v.volume_id, node))).toBe('OK');
    });

    it.for([
      ['readonly flag', mountCap(), true],
      ['access mode', mountCap('SINGLE_NODE_READER_ONLY'), false],
    ] as const)('answers ALREADY_EXISTS to a repeat on the same node with another %s', async ([, cap, readonly], { skip }) => {
      need(env, skip, 'CREATE_DELETE_VOLUME', 'PUBLISH_UNPUBLISH_VOLUME');
      const [node = ''] = env.nodes(1, skip);
      const v = await env.createVolume(env.name('pub-incompatible'), { volume_capabilities: [mountCap(), mountCap('SINGLE_NODE_READER_ONLY')] });
      await publish(v.volume_id, node);
      expect(await codeName(publish(v.volume_id, node, cap, readonly))).toBe('ALREADY_EXISTS');
    });

    it.for([
      ['single-node writer', mountCap(), 'FAILED_PRECONDITION'],
      ['multi-node reader', mountCap('MULTI_NODE_READER_ONLY'), 'OK'],
    ] as const)('a %s volume published on one node is %s on a second', async ([, cap, expected], { skip }) => {
      need(env, skip, 'CREATE_DELETE_VOLUME', 'PUBLISH_UNPUBLISH_VOLUME');
      const [one = '', two = ''] = env.nodes(2, skip);
      const v = await env.createVolume(env.name(`pub-second-${expected.toLowerCase()}`), { volume_capabilities: [cap] });
      await publish(v.volume_id, one, cap);
      expect(await codeName(publish(v.volume_id, two, cap))).toBe(expected);
    });

    it('answers NOT_FOUND for a volume that does not exist, INVALID_ARGUMENT for a capability it cannot serve', async ({ skip }) => {
      need(env, skip, 'CREATE_DELETE_VOLUME', 'PUBLISH_UNPUBLISH_VOLUME');
      const [node = ''] = env.nodes(1, skip);
      expect(await codeName(publish(env.name('nope'), node))).toBe('NOT_FOUND');
      const v = await env.createVolume(env.name('pub-unserved'));
      expect(await codeName(publish(v.volume_id, node, mountCap('MULTI_NODE_SINGLE_WRITER')))).toBe('INVALID_ARGUMENT');
    });

    it('refuses to delete a published volume, and unpublishes idempotently, from every node when none is named', async ({ skip }) => {
      need(env, skip, 'CREATE_DELETE_VOLUME', 'PUBLISH_UNPUBLISH_VOLUME');
      const [one = '', two = ''] = env.nodes(2, skip);
      const cap = mountCap('MULTI_NODE_READER_ONLY');
      const v = await env.createVolume(env.name('unpub'), { volume_capabilities: [cap] });
      await publish(v.volume_id, one, cap, true);
      await publish(v.volume_id, two, cap, true);
      expect(await codeName(env.controller('DeleteVolume', { volume_id: v.volume_id }))).toBe('FAILED_PRECONDITION');
      await env.controller('ControllerUnpublishVolume', { volume_id: v.volume_id, node_id: one });
      expect(await codeName(env.controller('ControllerUnpublishVolume', { volume_id: v.volume_id, node_id: one }))).toBe('OK');
      expect(await codeName(env.controller('ControllerUnpublishVolume', { volume_id: v.volume_id, node_id: 'node-never' }))).toBe('OK');
      await env.controller('ControllerUnpublishVolume', { volume_id: v.volume_id, node_id: '' });
      if (env.controllerCaps.has('GET_VOLUME')) {
        expect((await env.controller('ControllerGetVolume', { volume_id: v.volume_id })).status.published_node_ids).toEqual([]);
      }
      expect(await codeName(env.controller('DeleteVolume', { volume_id: v.volume_id }))).toBe('OK');
    });

    it('unpublishes a volume that does not exist with OK (it is not published anywhere)', async ({ skip }) => {
      need(env, skip, 'PUBLISH_UNPUBLISH_VOLUME');
      expect(await codeName(env.controller('ControllerUnpublishVolume', { volume_id: env.name('nope'), node_id: 'node-1' }))).toBe('OK');
    });
  });

  describe('ControllerExpandVolume', () => {
    it('grows to at least the required size, answers a repeat the same, and never shrinks', async ({ skip }) => {
      need(env, skip, 'CREATE_DELETE_VOLUME', 'EXPAND_VOLUME');
      const v = await env.createVolume(env.name('expand'));
      const req = { volume_id: v.volume_id, capacity_range: { required_bytes: String(2n * SIZE + 1n) }, volume_capability: mountCap() };
      const grown = await env.controller('ControllerExpandVolume', req);
      expect(BigInt(grown.capacity_bytes)).toBeGreaterThanOrEqual(2n * SIZE + 1n);
      expect(typeof grown.node_expansion_required).toBe('boolean');
      expect(await env.controller('ControllerExpandVolume', req)).toEqual(grown);
      const smaller = await env.controller('ControllerExpandVolume', { ...req, capacity_range: { required_bytes: String(SIZE) } });
      expect(smaller.capacity_bytes).toBe(grown.capacity_bytes);
      if (env.controllerCaps.has('GET_VOLUME')) {
        expect((await env.controller('ControllerGetVolume', { volume_id: v.volume_id })).volume.capacity_bytes).toBe(grown.capacity_bytes);
      }
    });

    it.for([
      ['a limit below the current size', { limit_bytes: String(SIZE / 2n) }],
      ['a required size above the limit', { required_bytes: String(4n * SIZE), limit_bytes: String(3n * SIZE) }],
    ] as const)('answers OUT_OF_RANGE to %s', async ([, range], { skip }) => {
      need(env, skip, 'CREATE_DELETE_VOLUME', 'EXPAND_VOLUME');
      const v = await env.createVolume(env.name('expand-range'));
      expect(await codeName(env.controller('ControllerExpandVolume', { volume_id: v.volume_id, capacity_range: range }))).toBe('OUT_OF_RANGE');
    });

    it('answers NOT_FOUND for a volume that does not exist', async ({ skip }) => {
      need(env, skip, 'EXPAND_VOLUME');
      expect(
        await codeName(env.controller('ControllerExpandVolume', { volume_id: env.name('nope'), capacity_range: { required_bytes: String(SIZE) } })),
      ).toBe('NOT_FOUND');
    });

    it('grows a published volume when expansion is ONLINE, refuses with FAILED_PRECONDITION when OFFLINE', async ({ skip }) => {
      need(env, skip, 'CREATE_DELETE_VOLUME', 'EXPAND_VOLUME', 'PUBLISH_UNPUBLISH_VOLUME');
      const online = env.pluginCaps.has('ONLINE');
      if (!online && !env.pluginCaps.has('OFFLINE')) skip('no volume_expansion plugin capability');
      const [node = ''] = env.nodes(1, skip);
      const v = await env.createVolume(env.name('expand-published'));
      env.trackControllerPublish(v.volume_id, node);
      await env.controller('ControllerPublishVolume', { volume_id: v.volume_id, node_id: node, volume_capability: mountCap() });
      const res = codeName(
        env.controller('ControllerExpandVolume', { volume_id: v.volume_id, capacity_range: { required_bytes: String(2n * SIZE) } }),
      );
      expect(await res).toBe(online ? 'OK' : 'FAILED_PRECONDITION');
    });
  });

  describe('ControllerModifyVolume', () => {
    it('applies mutable parameters, keeps the id, and answers a repeat with OK', async ({ skip }) => {
      need(env, skip, 'CREATE_DELETE_VOLUME', 'MODIFY_VOLUME', 'GET_VOLUME');
      const v = await env.createVolume(env.name('modify'), { parameters: { format: 'qcow2' } });
      const req = { volume_id: v.volume_id, mutable_parameters: { format: 'raw' } };
      await env.controller('ControllerModifyVolume', req);
      expect(await codeName(env.controller('ControllerModifyVolume', req))).toBe('OK');
      const got = await env.controller('ControllerGetVolume', { volume_id: v.volume_id });
      expect(got.volume.volume_id).toBe(v.volume_id);
      expect(got.volume.capacity_bytes).toBe(v.capacity_bytes);
    });

    it('refuses unknown mutable parameters with INVALID_ARGUMENT and unknown volumes with NOT_FOUND', async ({ skip }) => {
      need(env, skip, 'CREATE_DELETE_VOLUME', 'MODIFY_VOLUME');
      const v = await env.createVolume(env.name('modify-bad'));
      expect(await codeName(env.controller('ControllerModifyVolume', { volume_id: v.volume_id, mutable_parameters: { colour: 'blue' } }))).toBe(
        'INVALID_ARGUMENT',
      );
      expect(await codeName(env.controller('ControllerModifyVolume', { volume_id: env.name('nope'), mutable_parameters: { format: 'raw' } }))).toBe(
        'NOT_FOUND',
      );
    });
  });
}
