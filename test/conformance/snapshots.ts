/**
 * Snapshot and clone rules (CSI spec: CreateSnapshot, DeleteSnapshot,
 * ListSnapshots, CreateVolume's volume_content_source). Gated by
 * CREATE_DELETE_SNAPSHOT, LIST_SNAPSHOTS and CLONE_VOLUME as advertised.
 */
import { rmSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { codeName, driverTrees, mountCap, need, SIZE, type Env } from './harness.js';

export function snapshotRules(env: Env): void {
  const snapshot = async (name: string, source: string) => {
    const res = await env.controller('CreateSnapshot', { name, source_volume_id: source });
    env.trackSnapshot(res.snapshot.snapshot_id);
    return res.snapshot;
  };

  describe('CreateSnapshot and DeleteSnapshot', () => {
    it('snapshots a volume, naming its source, and answers a repeat with the same snapshot', async ({ skip }) => {
      need(env, skip, 'CREATE_DELETE_VOLUME', 'CREATE_DELETE_SNAPSHOT');
      const v = await env.createVolume(env.name('snap-src'));
      const s = await snapshot(env.name('snap'), v.volume_id);
      expect(s.snapshot_id).not.toBe('');
      expect(s.source_volume_id).toBe(v.volume_id);
      expect(Number(s.creation_time.seconds)).toBeGreaterThan(0);
      expect(BigInt(s.size_bytes)).toBeGreaterThanOrEqual(0n);
      expect(typeof s.ready_to_use).toBe('boolean');
      expect(await snapshot(env.name('snap'), v.volume_id)).toEqual(s);
    });

    it('takes a 128-character name, twice', async ({ skip }) => {
      need(env, skip, 'CREATE_DELETE_VOLUME', 'CREATE_DELETE_SNAPSHOT');
      const v = await env.createVolume(env.name('snap-long-src'));
      const name = env.name('snap-long-').padEnd(128, 'x');
      const s = await snapshot(name, v.volume_id);
      expect(await snapshot(name, v.volume_id)).toEqual(s);
    });

    it('answers ALREADY_EXISTS to a name taken by a snapshot of another volume, NOT_FOUND to an unknown source', async ({ skip }) => {
      need(env, skip, 'CREATE_DELETE_VOLUME', 'CREATE_DELETE_SNAPSHOT');
      const a = await env.createVolume(env.name('snap-a'));
      const b = await env.createVolume(env.name('snap-b'));
      await snapshot(env.name('snap-taken'), a.volume_id);
      expect(await codeName(env.controller('CreateSnapshot', { name: env.name('snap-taken'), source_volume_id: b.volume_id }))).toBe(
        'ALREADY_EXISTS',
      );
      expect(await codeName(env.controller('CreateSnapshot', { name: env.name('snap-orphan'), source_volume_id: env.name('nope') }))).toBe(
        'NOT_FOUND',
      );
    });

    it('deletes unknown snapshots and repeats with OK, and a deleted snapshot is gone from listings and sources', async ({ skip }) => {
      need(env, skip, 'CREATE_DELETE_VOLUME', 'CREATE_DELETE_SNAPSHOT');
      expect(await codeName(env.controller('DeleteSnapshot', { snapshot_id: env.name('never-snapped') }))).toBe('OK');
      const v = await env.createVolume(env.name('snap-del-src'));
      const s = await snapshot(env.name('snap-del'), v.volume_id);
      await env.controller('DeleteSnapshot', { snapshot_id: s.snapshot_id });
      expect(await codeName(env.controller('DeleteSnapshot', { snapshot_id: s.snapshot_id }))).toBe('OK');
      if (env.controllerCaps.has('LIST_SNAPSHOTS'))
        expect((await env.controller('ListSnapshots', { snapshot_id: s.snapshot_id })).entries).toEqual([]);
      const fromGone = env.createRequest(env.name('snap-del-clone'), { volume_content_source: { snapshot: { snapshot_id: s.snapshot_id } } });
      expect(await codeName(env.controller('CreateVolume', fromGone))).toBe('NOT_FOUND');
    });
  });

  describe('snapshots and clones of volumes in use', () => {
    const publish = (volume_id: string, node_id: string) =>
      env.controller('ControllerPublishVolume', { volume_id, node_id, volume_capability: mountCap(), readonly: false });

    it('snapshots a published volume: ready now, or not ready until repeats find it ready, and ListSnapshots agrees', async ({ skip }) => {
      need(env, skip, 'CREATE_DELETE_VOLUME', 'CREATE_DELETE_SNAPSHOT', 'PUBLISH_UNPUBLISH_VOLUME', 'LIST_SNAPSHOTS');
      const [node = ''] = env.nodes(1, skip);
      const v = await env.createVolume(env.name('busy-src'));
      await publish(v.volume_id, node);
      const first = await snapshot(env.name('busy-snap'), v.volume_id);
      const listed = (await env.controller('ListSnapshots', { snapshot_id: first.snapshot_id })).entries;
      expect(listed.map((e: { snapshot: { ready_to_use: boolean } }) => e.snapshot.ready_to_use)).toEqual([first.ready_to_use]);
      // A volume published to a node that runs no plugin: detached, any pending cut can finish.
      await env.controller('ControllerUnpublishVolume', { volume_id: v.volume_id, node_id: node });
      const again = await snapshot(env.name('busy-snap'), v.volume_id);
      expect(again).toMatchObject({ snapshot_id: first.snapshot_id, source_volume_id: v.volume_id, ready_to_use: true });
      expect((await env.controller('ListSnapshots', { snapshot_id: first.snapshot_id })).entries[0].snapshot.ready_to_use).toBe(true);
    });

    it('clones a published volume, or answers a code the provisioner retries (ABORTED, UNAVAILABLE), never FAILED_PRECONDITION', async ({ skip }) => {
      need(env, skip, 'CREATE_DELETE_VOLUME', 'CLONE_VOLUME', 'PUBLISH_UNPUBLISH_VOLUME');
      const [node = ''] = env.nodes(1, skip);
      const v = await env.createVolume(env.name('busy-clone-src'));
      await publish(v.volume_id, node);
      const request = env.createRequest(env.name('busy-clone'), { volume_content_source: { volume: { volume_id: v.volume_id } } });
      const code = await codeName(env.controller('CreateVolume', request));
      expect(['OK', 'ABORTED', 'UNAVAILABLE']).toContain(code);
      await env.controller('ControllerUnpublishVolume', { volume_id: v.volume_id, node_id: node });
      const clone = await env.controller('CreateVolume', request);
      env.trackVolume(clone.volume.volume_id);
      expect(clone.volume.content_source.volume.volume_id).toBe(v.volume_id);
    });

    it('keeps a volume healthy when the snapshot under it is deleted', async ({ skip }) => {
      need(env, skip, 'CREATE_DELETE_VOLUME', 'CREATE_DELETE_SNAPSHOT', 'GET_VOLUME', 'VOLUME_CONDITION');
      const v = await env.createVolume(env.name('layer-src'));
      const s = await snapshot(env.name('layer-snap'), v.volume_id);
      await env.controller('DeleteSnapshot', { snapshot_id: s.snapshot_id });
      // ABORTED while the driver is busy with the volume (merging the deleted layer into it): asked again.
      let got: Record<string, any> | undefined;
      for (let i = 0; i < 100 && got === undefined; i++) {
        got = await env.controller('ControllerGetVolume', { volume_id: v.volume_id }).catch(async (e: unknown) => {
          if ((e as { code?: number }).code !== 10) throw e;
          await new Promise((r) => setTimeout(r, 100));
          return undefined;
        });
      }
      expect(got?.status.volume_condition).toMatchObject({ abnormal: false });
    });
  });

  describe('ListSnapshots', () => {
    const prefix = () => `${env.run}-ls-`;
    const ours = (entries: any[]) => entries.map((e) => e.snapshot.snapshot_id as string).filter((id) => id.startsWith(prefix()));

    it('filters by snapshot id and by source volume, and answers empty for unknown ones', async ({ skip }) => {
      need(env, skip, 'CREATE_DELETE_VOLUME', 'CREATE_DELETE_SNAPSHOT', 'LIST_SNAPSHOTS');
      const a = await env.createVolume(env.name('ls-vol-a'));
      const b = await env.createVolume(env.name('ls-vol-b'));
      const sa = await snapshot(env.name('ls-a1'), a.volume_id);
      await snapshot(env.name('ls-a2'), a.volume_id);
      const sb = await snapshot(env.name('ls-b1'), b.volume_id);
      const byId = await env.controller('ListSnapshots', { snapshot_id: sb.snapshot_id });
      expect(byId.entries.map((e: any) => e.snapshot)).toEqual([sb]);
      expect(ours((await env.controller('ListSnapshots', { source_volume_id: a.volume_id })).entries)).toEqual([
        env.name('ls-a1'),
        env.name('ls-a2'),
      ]);
      expect((await env.controller('ListSnapshots', { snapshot_id: sa.snapshot_id, source_volume_id: b.volume_id })).entries).toEqual([]);
      expect((await env.controller('ListSnapshots', { snapshot_id: env.name('no-such-snapshot') })).entries).toEqual([]);
      expect((await env.controller('ListSnapshots', { source_volume_id: env.name('no-such-volume') })).entries).toEqual([]);
    });

    it('pages by max_entries, and pages on when the last listed snapshot is deleted and another added', async ({ skip }) => {
      need(env, skip, 'CREATE_DELETE_VOLUME', 'CREATE_DELETE_SNAPSHOT', 'LIST_SNAPSHOTS');
      const v = await env.createVolume(env.name('ls-page-src'));
      for (const n of ['p1', 'p2', 'p3', 'p4', 'p5']) await snapshot(env.name(`ls-${n}`), v.volume_id);
      const ids: string[] = [];
      let token = '';
      let page = 0;
      let added = '';
      do {
        const res = await env.controller('ListSnapshots', { source_volume_id: v.volume_id, max_entries: 2, starting_token: token });
        expect(res.entries.length).toBeLessThanOrEqual(2);
        ids.push(...res.entries.map((e: any) => e.snapshot.snapshot_id));
        token = res.next_token;
        if (page++ === 0) {
          await env.controller('DeleteSnapshot', { snapshot_id: ids[ids.length - 1] });
          added = (await snapshot(env.name('ls-p9-added'), v.volume_id)).snapshot_id;
        }
      } while (token !== '');
      expect(page).toBeGreaterThan(1);
      expect(new Set(ids).size).toBe(ids.length);
      expect(ids).toEqual(expect.arrayContaining([env.name('ls-p3'), env.name('ls-p4'), env.name('ls-p5'), added]));
    });

    it('refuses a negative max_entries with INVALID_ARGUMENT', async ({ skip }) => {
      need(env, skip, 'LIST_SNAPSHOTS');
      expect(await codeName(env.controller('ListSnapshots', { max_entries: -1 }))).toBe('INVALID_ARGUMENT');
    });

    it('answers ABORTED to a starting_token it never handed out', async ({ skip }) => {
      need(env, skip, 'LIST_SNAPSHOTS');
      expect(await codeName(env.controller('ListSnapshots', { starting_token: 'invalid-token' }))).toBe('ABORTED');
    });
  });

  describe('volumes from a snapshot or a volume', () => {
    it.for(['snapshot', 'volume'] as const)(
      'creates a volume from a %s, reporting it as content source, at least as big as the source',
      async (kind, { skip }) => {
        need(env, skip, 'CREATE_DELETE_VOLUME', kind === 'snapshot' ? 'CREATE_DELETE_SNAPSHOT' : 'CLONE_VOLUME');
        const src = await env.createVolume(env.name(`clone-src-${kind}`), { capacity_range: { required_bytes: String(2n * SIZE) } });
        const source =
          kind === 'snapshot'
            ? { snapshot: { snapshot_id: (await snapshot(env.name('clone-snap'), src.volume_id)).snapshot_id } }
            : { volume: { volume_id: src.volume_id } };
        const req = env.createRequest(env.name(`clone-of-${kind}`), { capacity_range: null, volume_content_source: source });
        const res = await env.controller('CreateVolume', req);
        env.trackVolume(res.volume.volume_id);
        expect(res.volume.content_source).toMatchObject(source);
        expect(BigInt(res.volume.capacity_bytes)).toBeGreaterThanOrEqual(BigInt(src.capacity_bytes));
        expect(await env.controller('CreateVolume', req)).toEqual(res);
        // The same name from another source is another volume.
        const other = kind === 'snapshot' ? { volume: { volume_id: src.volume_id } } : { snapshot: { snapshot_id: env.name('clone-snap') } };
        if (env.controllerCaps.has('CLONE_VOLUME') && env.controllerCaps.has('CREATE_DELETE_SNAPSHOT')) {
          expect(await codeName(env.controller('CreateVolume', { ...req, volume_content_source: other }))).toBe('ALREADY_EXISTS');
        }
      },
    );

    it.for(['snapshot', 'volume'] as const)('answers NOT_FOUND for a %s source that does not exist', async (kind, { skip }) => {
      need(env, skip, 'CREATE_DELETE_VOLUME', kind === 'snapshot' ? 'CREATE_DELETE_SNAPSHOT' : 'CLONE_VOLUME');
      const source = kind === 'snapshot' ? { snapshot: { snapshot_id: env.name('nope') } } : { volume: { volume_id: env.name('nope') } };
      expect(
        await codeName(env.controller('CreateVolume', env.createRequest(env.name(`clone-missing-${kind}`), { volume_content_source: source }))),
      ).toBe('NOT_FOUND');
    });

    it('answers OUT_OF_RANGE for a volume whose limit is below the size of its source snapshot', async ({ skip }) => {
      need(env, skip, 'CREATE_DELETE_VOLUME', 'CREATE_DELETE_SNAPSHOT');
      const src = await env.createVolume(env.name('clone-big-src'), { capacity_range: { required_bytes: String(2n * SIZE) } });
      const snap = await snapshot(env.name('clone-big-snap'), src.volume_id);
      const req = env.createRequest(env.name('clone-small'), {
        capacity_range: { limit_bytes: String(SIZE) },
        volume_content_source: { snapshot: { snapshot_id: snap.snapshot_id } },
      });
      expect(await codeName(env.controller('CreateVolume', req))).toBe('OUT_OF_RANGE');
    });

    it('leaves no copy of the source behind after a full clone, or a refused clone, of a volume', async ({ skip }) => {
      need(env, skip, 'CREATE_DELETE_VOLUME', 'CLONE_VOLUME');
      if (Object.keys(env.mounts).length === 0) skip('looks inside the mounts of a self-started driver');
      const src = await env.createVolume(env.name('full-src'), { parameters: { format: 'raw' } });
      const clone = env.createRequest(env.name('full-clone'), {
        parameters: { format: 'raw' },
        volume_content_source: { volume: { volume_id: src.volume_id } },
      });
      env.trackVolume(clone.name);
      await env.controller('CreateVolume', clone);
      const refused = { ...clone, name: env.name('full-refused'), capacity_range: { limit_bytes: String(SIZE / 2n) } };
      expect(await codeName(env.controller('CreateVolume', refused))).toBe('OUT_OF_RANGE');
      await env.sweep();
      try {
        expect(driverTrees(env).filter((p) => p.includes('/snapshots/'))).toEqual([]);
      } finally {
        // Remove what the bug left, so the end-of-suite check sees only new leaks.
        for (const p of driverTrees(env)) if (p.includes(`/snapshots/clone-of-${env.run}-full-src-`)) rmSync(p, { recursive: true, force: true });
      }
    });

    it.for([
      ['volume', 'CLONE_VOLUME'],
      ['snapshot', 'CREATE_DELETE_SNAPSHOT'],
    ] as const)('refuses a %s source with INVALID_ARGUMENT when %s is not advertised', async ([kind, capability], { skip }) => {
      need(env, skip, 'CREATE_DELETE_VOLUME');
      if (env.controllerCaps.has(capability)) skip(`${capability} is advertised`);
      const source = kind === 'snapshot' ? { snapshot: { snapshot_id: env.name('nope') } } : { volume: { volume_id: env.name('nope') } };
      expect(
        await codeName(env.controller('CreateVolume', env.createRequest(env.name('clone-unadvertised'), { volume_content_source: source }))),
      ).toBe('INVALID_ARGUMENT');
    });
  });
}
