/**
 * ListVolumes and GetCapacity (CSI spec): pagination that survives changes
 * between pages, published nodes and conditions, capacity per topology segment.
 */
import { describe, expect, it } from 'vitest';
import { blockCap, codeName, MiB, mountCap, need, type Env } from './harness.js';

export function listingRules(env: Env): void {
  describe('ListVolumes', () => {
    const ours = (entries: any[]) => entries.filter((e) => String(e.volume.volume_id).startsWith(`${env.run}-list-`));
    const listAll = async (maxEntries: number, between?: (page: number, ids: string[]) => Promise<void>) => {
      const ids: string[] = [];
      let token = '';
      let page = 0;
      do {
        const res = await env.controller('ListVolumes', { max_entries: maxEntries, starting_token: token });
        if (maxEntries > 0) expect(res.entries.length).toBeLessThanOrEqual(maxEntries);
        ids.push(...res.entries.map((e: any) => e.volume.volume_id as string));
        token = res.next_token;
        await between?.(page, ids);
        page++;
      } while (token !== '');
      return { ids, pages: page };
    };

    it('lists every volume once with the Volume CreateVolume returned, in pages of max_entries', async ({ skip }) => {
      need(env, skip, 'CREATE_DELETE_VOLUME', 'LIST_VOLUMES');
      const made = [];
      for (const n of ['a', 'b', 'c', 'd', 'e']) made.push(await env.createVolume(env.name(`list-${n}`)));
      const whole = await env.controller('ListVolumes', {});
      expect(whole.next_token).toBe('');
      for (const v of made) expect(whole.entries.find((e: any) => e.volume.volume_id === v.volume_id)?.volume).toEqual(v);
      const paged = await listAll(2);
      expect(paged.ids).toEqual(whole.entries.map((e: any) => e.volume.volume_id));
      expect(paged.pages).toBeGreaterThan(1);
      expect(ours((await env.controller('ListVolumes', {})).entries)).toEqual(ours(whole.entries));
    });

    it('pages on correctly when the last listed volume is deleted and another is added between pages', async ({ skip }) => {
      need(env, skip, 'CREATE_DELETE_VOLUME', 'LIST_VOLUMES');
      for (const n of ['a', 'b', 'c', 'd', 'e']) await env.createVolume(env.name(`list-${n}`));
      const before = (await env.controller('ListVolumes', {})).entries.map((e: any) => e.volume.volume_id as string);
      let added = '';
      const deleted: string[] = [];
      const { ids } = await listAll(2, async (page, seen) => {
        if (page !== 0) return;
        const last = seen[seen.length - 1] ?? '';
        await env.controller('DeleteVolume', { volume_id: last });
        deleted.push(last);
        added = (await env.createVolume(env.name('list-zz-added'))).volume_id;
      });
      // Nothing listed twice; everything that stayed is listed; the volume added after the
      // token's position shows up (ids sort after the page it was added behind).
      expect(new Set(ids).size).toBe(ids.length);
      for (const id of before) if (!deleted.includes(id)) expect(ids).toContain(id);
      expect(ids).toContain(added);
    });

    it('refuses a negative max_entries with INVALID_ARGUMENT', async ({ skip }) => {
      need(env, skip, 'LIST_VOLUMES');
      expect(await codeName(env.controller('ListVolumes', { max_entries: -1 }))).toBe('INVALID_ARGUMENT');
    });

    it('answers ABORTED to a starting_token it never handed out', async ({ skip }) => {
      need(env, skip, 'LIST_VOLUMES');
      expect(await codeName(env.controller('ListVolumes', { starting_token: 'invalid-token' }))).toBe('ABORTED');
    });

    it('reports the nodes a volume is published to, and its condition', async ({ skip }) => {
      need(env, skip, 'CREATE_DELETE_VOLUME', 'LIST_VOLUMES', 'PUBLISH_UNPUBLISH_VOLUME');
      const [node = ''] = env.nodes(1, skip);
      const v = await env.createVolume(env.name('list-published'));
      env.trackControllerPublish(v.volume_id, node);
      await env.controller('ControllerPublishVolume', { volume_id: v.volume_id, node_id: node, volume_capability: mountCap() });
      const entry = (await env.controller('ListVolumes', {})).entries.find((e: any) => e.volume.volume_id === v.volume_id);
      if (env.controllerCaps.has('LIST_VOLUMES_PUBLISHED_NODES')) expect(entry.status.published_node_ids).toEqual([node]);
      if (env.controllerCaps.has('VOLUME_CONDITION')) expect(entry.status.volume_condition.abnormal).toBe(false);
      await env.controller('ControllerUnpublishVolume', { volume_id: v.volume_id, node_id: node });
    });
  });

  describe('GetCapacity', () => {
    // Free space moves a little while a filesystem settles (xfs frees deleted files' blocks in
    // the background): answers taken moments apart are compared within 8 MiB per mount.
    const near = (a: bigint, b: bigint, mounts: number) => (a > b ? a - b : b - a) <= BigInt(Math.max(1, mounts)) * 8n * MiB;
    const capacity = async (req: object) => {
      const r = await env.controller('GetCapacity', req);
      return {
        available: BigInt(r.available_capacity),
        maximum: r.maximum_volume_size === null ? undefined : BigInt(r.maximum_volume_size.value),
        minimum: r.minimum_volume_size === null ? undefined : BigInt(r.minimum_volume_size.value),
      };
    };

    it.for(['qcow2', 'raw'])('reports %s capacity with the largest volume no bigger than the total, and the same again', async (format, { skip }) => {
      need(env, skip, 'GET_CAPACITY');
      const params = { ...env.baseParameters, format };
      const c = await capacity({ parameters: params, volume_capabilities: [mountCap()] });
      expect(c.available).toBeGreaterThanOrEqual(0n);
      if (c.maximum !== undefined) expect(c.maximum).toBeLessThanOrEqual(c.available);
      if (c.minimum !== undefined && c.maximum !== undefined && c.maximum > 0n) expect(c.minimum).toBeLessThanOrEqual(c.maximum);
      const again = await capacity({ parameters: params, volume_capabilities: [mountCap()] });
      expect(near(again.available, c.available, env.topologyMounts().length)).toBe(true);
    });

    it.for(['qcow2', 'raw'])('reports %s capacity per topology segment that adds up to the whole', async (format, { skip }) => {
      need(env, skip, 'GET_CAPACITY');
      if (!env.pluginCaps.has('VOLUME_ACCESSIBILITY_CONSTRAINTS')) skip('no topology');
      const params = { ...env.baseParameters, format };
      const mounts = env.topologyMounts();
      const whole = await capacity({ parameters: params });
      let sum = 0n;
      for (const m of mounts) sum += (await capacity({ parameters: params, accessible_topology: { segments: { [env.key(m)]: 'true' } } })).available;
      expect(near(sum, whole.available, mounts.length)).toBe(true);
      const node = await capacity({ parameters: params, accessible_topology: { segments: env.nodeSegments } });
      expect(near(node.available, whole.available, mounts.length)).toBe(true);
    });

    it('reports nothing for a segment it does not serve or capabilities it cannot serve', async ({ skip }) => {
      need(env, skip, 'GET_CAPACITY');
      expect((await capacity({ accessible_topology: { segments: { 'elsewhere.example.com/zone': 'z1' } } })).available).toBe(0n);
      expect(
        (await capacity({ parameters: { ...env.baseParameters, format: 'qcow2' }, volume_capabilities: [blockCap('MULTI_NODE_MULTI_WRITER')] }))
          .available,
      ).toBe(0n);
    });

    it('creates a volume of exactly maximum_volume_size, and not one MiB more', async ({ skip }) => {
      need(env, skip, 'GET_CAPACITY', 'CREATE_DELETE_VOLUME');
      const params = { ...env.baseParameters, format: 'raw' };
      const c = await capacity({ parameters: params, volume_capabilities: [mountCap()] });
      if (c.maximum === undefined || c.maximum === 0n) return skip('no room reported');
      expect(
        await codeName(env.createVolume(env.name('max-plus'), { parameters: params, capacity_range: { required_bytes: String(c.maximum + MiB) } })),
      ).not.toBe('OK');
      expect(await codeName(env.createVolume(env.name('max'), { parameters: params, capacity_range: { required_bytes: String(c.maximum) } }))).toBe(
        'OK',
      );
      await env.controller('DeleteVolume', { volume_id: env.name('max') });
    });

    it('creates a volume of minimum_volume_size', async ({ skip }) => {
      need(env, skip, 'GET_CAPACITY', 'CREATE_DELETE_VOLUME');
      const c = await capacity({ parameters: env.baseParameters });
      if (c.minimum === undefined || c.minimum === 0n) return skip('no minimum reported');
      const v = await env.createVolume(env.name('min'), { capacity_range: { required_bytes: String(c.minimum) } });
      expect(BigInt(v.capacity_bytes)).toBeGreaterThanOrEqual(c.minimum);
    });
  });
}
