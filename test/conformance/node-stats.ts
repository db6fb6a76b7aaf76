/**
 * NodeGetVolumeStats and NodeExpandVolume (CSI spec): usage and condition,
 * NOT_FOUND for a path the volume is not at (relative or missing ones too), online growth that agrees with
 * the controller, limits.
 */
import { mkdirSync, statfsSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { blockCap, codeName, failure, mountCap, SIZE, type Env } from './harness.js';
import { nodeSteps, XFS_MIN } from './node-steps.js';

export function nodeStatsRules(env: Env): void {
  const { needNode, provision, stageWith } = nodeSteps(env);

  describe('Node: stats and expansion', () => {
    const published = async (what: string, format: 'raw' | 'qcow2', cap: object = mountCap(), size = SIZE) => {
      const v = await provision(what, format, cap, false, size);
      await stageWith(v, cap);
      await env.publish(v.id, cap, env.paths(v.id).target);
      return v;
    };
    const done = async (id: string) => {
      await env.unpublish(id, env.paths(id).target);
      await env.unstage(id);
    };

    it('reports bytes and inodes of a published filesystem at its target and staging paths, with its condition', async ({ skip }) => {
      needNode(skip, 'GET_VOLUME_STATS');
      const v = await published('node-stats', 'raw');
      for (const path of [env.paths(v.id).target, env.paths(v.id).staging]) {
        const stats = await env.node('NodeGetVolumeStats', { volume_id: v.id, volume_path: path });
        const bytes = stats.usage.find((u: any) => u.unit === 'BYTES');
        expect(BigInt(bytes.total)).toBeGreaterThan(0n);
        expect(BigInt(bytes.used)).toBeLessThanOrEqual(BigInt(bytes.total));
        expect(stats.usage.find((u: any) => u.unit === 'INODES')).toBeDefined();
        if (env.nodeCaps.has('VOLUME_CONDITION')) expect(stats.volume_condition.abnormal).toBe(false);
      }
      await done(v.id);
    });

    it('reports the size of a published block volume at its device file', async ({ skip }) => {
      needNode(skip, 'GET_VOLUME_STATS');
      const cap = blockCap();
      const v = await provision('node-blk-stats', 'raw', cap);
      const { device } = env.paths(v.id);
      await stageWith(v, cap);
      await env.publish(v.id, cap, device);
      const stats = await env.node('NodeGetVolumeStats', { volume_id: v.id, volume_path: device });
      expect(BigInt(stats.usage.find((u: any) => u.unit === 'BYTES').total)).toBe(v.capacity);
      await env.unpublish(v.id, device);
      await env.unstage(v.id);
    });

    it("answers NOT_FOUND for stats and expansion at a missing or relative path, another volume's target, a foreign directory, or for an unknown volume", async ({
      skip,
    }) => {
      needNode(skip, 'GET_VOLUME_STATS');
      const a = await published('node-notfound-a', 'raw');
      const b = await published('node-notfound-b', 'raw');
      const elsewhere = join(env.kubeletDir, 'pods', `${env.run}-pod-1`, 'elsewhere');
      mkdirSync(elsewhere, { recursive: true });
      const cases: [string, string, string][] = [
        ['a path that does not exist', a.id, join(env.paths(a.id).target, '..', 'no-such-dir')],
        ['the target of another volume', a.id, env.paths(b.id).target],
        ['a directory the volume is not at', a.id, elsewhere],
        ['a volume that does not exist', env.name('node-nope'), env.paths(a.id).target],
        // csi-sanity's paths: kubelet never sends them, and no volume is ever there.
        ['a relative path', a.id, 'some/path'],
        ['a relative path, for a volume that does not exist', env.name('node-nope'), 'some/path'],
        ['a missing path outside the kubelet directory', a.id, '/path/does/not/exist'],
      ];
      for (const [what, id, path] of cases) {
        expect(await codeName(env.node('NodeGetVolumeStats', { volume_id: id, volume_path: path })), `stats at ${what}`).toBe('NOT_FOUND');
        if (env.nodeCaps.has('EXPAND_VOLUME')) {
          const req = { volume_id: id, volume_path: path, capacity_range: { required_bytes: String(SIZE) } };
          expect(await codeName(env.node('NodeExpandVolume', req)), `expansion at ${what}`).toBe('NOT_FOUND');
        }
      }
      await done(a.id);
      await done(b.id);
    });

    it.for(['raw', 'qcow2'] as const)(
      'grows a published %s filesystem online to the size the controller reports, and answers a repeat the same',
      async (format, { skip }) => {
        needNode(skip, 'EXPAND_VOLUME');
        if (!env.controllerCaps.has('EXPAND_VOLUME') || !env.pluginCaps.has('ONLINE')) skip('needs ONLINE controller expansion');
        // xfs: growing a mounted ext4 needs CAP_SYS_RESOURCE, which a test machine may lack.
        const cap = mountCap('SINGLE_NODE_WRITER', 'xfs');
        const v = await published(`node-grow-${format}`, format, cap, XFS_MIN);
        const target = env.paths(v.id).target;
        const before = statfsSync(target);
        // Not a whole number of MiB: node and controller must agree on what it becomes.
        const required = String(2n * XFS_MIN + 1n);
        const ctrl = await env.controller('ControllerExpandVolume', {
          volume_id: v.id,
          capacity_range: { required_bytes: required },
          volume_capability: cap,
        });
        const req = {
          volume_id: v.id,
          volume_path: target,
          staging_target_path: env.paths(v.id).staging,
          capacity_range: { required_bytes: required },
          volume_capability: cap,
        };
        const grown = await env.node('NodeExpandVolume', req);
        expect(grown.capacity_bytes).toBe(ctrl.capacity_bytes);
        expect(await env.node('NodeExpandVolume', req)).toEqual(grown);
        const after = statfsSync(target);
        expect(after.blocks * after.bsize).toBeGreaterThan(before.blocks * before.bsize);
        await done(v.id);
      },
    );

    it('answers OUT_OF_RANGE to a node expansion whose limit is below the volume size', async ({ skip }) => {
      needNode(skip, 'EXPAND_VOLUME');
      const v = await published('node-grow-limit', 'raw');
      const req = {
        volume_id: v.id,
        volume_path: env.paths(v.id).target,
        capacity_range: { required_bytes: String(SIZE / 4n), limit_bytes: String(SIZE / 2n) },
      };
      expect(await codeName(env.node('NodeExpandVolume', req))).toBe('OUT_OF_RANGE');
      await done(v.id);
    });

    it('answers FAILED_PRECONDITION when asked to grow a raw volume past what the controller made', async ({ skip }) => {
      needNode(skip, 'EXPAND_VOLUME');
      const v = await published('node-grow-early', 'raw');
      const req = { volume_id: v.id, volume_path: env.paths(v.id).target, capacity_range: { required_bytes: String(4n * SIZE) } };
      const f = await failure(env.node('NodeExpandVolume', req));
      expect(f.name).toBe('FAILED_PRECONDITION');
      expect(f.details).toMatch(/ControllerExpandVolume/);
      await done(v.id);
    });
  });
}
