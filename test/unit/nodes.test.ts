/** The node registry on the shares: heartbeat writes, lookups, holders, staleness. */
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { Layout } from '../../src/storage/layout.js';
import { linuxProbes, Mounts, type MountProbes } from '../../src/storage/mounts.js';
import { NodeHeartbeat } from '../../src/node/heartbeat.js';
import {
  forgetNode,
  HEARTBEAT_MS,
  NODE_SCHEMA,
  nodeFile,
  readNodes,
  ShareNodeRegistry,
  STALE_MS,
  writeNode,
  type NodeRecord,
} from '../../src/storage/nodes.js';
import { parseMountInfo } from '../../src/system/mountinfo.js';

const log = pino({ level: 'silent' });
const dirs: string[] = [];
afterEach(() => {
  vi.useRealTimers();
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

/** Shares a, b, c in temp directories; `mounted` and `writable` say which count as such (mountinfo is faked). */
function shares(mounted: string[], writable: string[] = mounted, cacheMs = 0) {
  const base = mkdtempSync(join(tmpdir(), 'fdtest-unit-nodes-'));
  dirs.push(base);
  const paths = { a: join(base, 'a'), b: join(base, 'b'), c: join(base, 'c') };
  const byPath = new Map(Object.entries(paths).map(([n, p]) => [p, n]));
  const probes: MountProbes = {
    ...linuxProbes,
    realpath: async (p) => p,
    mountInfo: async () => parseMountInfo(mounted.map((n, i) => `${i + 30} 1 0:${i} / ${paths[n as 'a']} rw - nfs4 filer:/${n} rw`).join('\n')),
    async writeProbe(layout) {
      if (!writable.includes(byPath.get(layout.mountPath) ?? '')) throw new Error('EROFS: read-only file system');
      await linuxProbes.writeProbe(layout);
    },
    sameFilesystem: async () => true,
    space: async () => ({ freeBytes: 1n, totalBytes: 2n }),
  };
  const mounts = new Mounts(
    Object.entries(paths).map(([name, path]) => ({ name, path })),
    probes,
    cacheMs,
    log,
  );
  return { mounts, paths, layout: (n: 'a' | 'b' | 'c') => new Layout(paths[n]) };
}

function record(node: string, ageMs = 0, staged: string[] = []): NodeRecord {
  const at = new Date(Date.now() - ageMs).toISOString();
  return { schema: NODE_SCHEMA, node, mounts: ['a'], staged, version: 'test', startedAt: at, heartbeatAt: at };
}

describe('node heartbeat', () => {
  it('records the node on every usable share with its staged volumes, and writes nothing to the others', async () => {
    const { mounts, paths, layout } = shares(['a', 'b'], ['a']);
    const written = await new NodeHeartbeat(mounts, 'node-1', '1.2.3', async () => ['pvc-2', 'pvc-1'], log).beat();
    expect(written).toEqual(['a']);
    const r = JSON.parse(readFileSync(nodeFile(layout('a'), 'node-1'), 'utf8'));
    expect(r).toMatchObject({ schema: 1, node: 'node-1', mounts: ['a'], staged: ['pvc-1', 'pvc-2'], version: '1.2.3' });
    expect(Date.parse(r.heartbeatAt)).not.toBeNaN();
    expect(readdirSync(layout('a').root).includes('nodes')).toBe(true);
    for (const n of ['b', 'c'] as const) expect(() => readdirSync(paths[n])).toThrow(/ENOENT/);
  });

  it('writes nothing into a share unmounted while its health is still cached', async () => {
    const { mounts, layout } = shares(['a'], ['a'], 60_000);
    const heartbeat = new NodeHeartbeat(mounts, 'node-1', 'v', async () => [], log);
    expect(await heartbeat.beat()).toEqual(['a']);
    rmSync(layout('a').root, { recursive: true }); // what a bare mountpoint looks like
    expect(await heartbeat.beat()).toEqual([]);
    expect(readdirSync(layout('a').mountPath)).toEqual([]);
  });

  it('still beats when the stage records cannot be read, keeping the last list', async () => {
    const { mounts, layout } = shares(['a']);
    let fail = false;
    const heartbeat = new NodeHeartbeat(
      mounts,
      'node-1',
      'v',
      async () => {
        if (fail) throw new Error('stage.json is not JSON');
        return ['pvc-1'];
      },
      log,
    );
    await heartbeat.beat();
    fail = true;
    expect(await heartbeat.beat()).toEqual(['a']);
    expect((await readNodes(layout('a')))[0]?.record?.staged).toEqual(['pvc-1']);
  });

  it('stores an id that is not a safe file name under its hash, keeping the id inside', async () => {
    const { mounts, layout } = shares(['a']);
    const id = 'Node With Spaces/and/slashes';
    await new NodeHeartbeat(mounts, id, 'v', async () => [], log).beat();
    const [entry] = await readNodes(layout('a'));
    expect(entry?.file).toMatch(/^h-[0-9a-f]{40}\.json$/);
    expect(entry?.record?.node).toBe(id);
    expect((await new ShareNodeRegistry(mounts).lookup(id))?.[0]?.record.node).toBe(id);
  });

  it('beats at start, then once per interval until stopped', async () => {
    vi.useFakeTimers({ toFake: ['setInterval', 'clearInterval'] });
    const { mounts, layout } = shares(['a']);
    const heartbeat = new NodeHeartbeat(mounts, 'node-1', 'v', async () => [], log);
    const beat = vi.spyOn(heartbeat, 'beat');
    await heartbeat.start();
    expect(beat).toHaveBeenCalledTimes(1);
    expect((await readNodes(layout('a'))).map((e) => e.record?.node)).toEqual(['node-1']);
    vi.advanceTimersByTime(HEARTBEAT_MS);
    expect(beat).toHaveBeenCalledTimes(2);
    heartbeat.stop();
    vi.advanceTimersByTime(3 * HEARTBEAT_MS);
    expect(beat).toHaveBeenCalledTimes(2);
    await beat.mock.results[1]?.value;
  });
});

describe('node registry', () => {
  it("finds a node on the volume's mount even while another share is unmounted", async () => {
    const { mounts, layout } = shares(['a', 'b']);
    await mounts.all();
    await writeNode(layout('a'), record('node-1'));
    const found = await new ShareNodeRegistry(mounts).lookup('node-1', 'a');
    expect(found).toEqual([expect.objectContaining({ mount: 'a', fresh: true, record: expect.objectContaining({ node: 'node-1' }) })]);
  });

  it("finds a node on any mount when the volume's has no record of it", async () => {
    const { mounts, layout } = shares(['a', 'b', 'c']);
    await mounts.all();
    await writeNode(layout('b'), record('node-1'));
    expect((await new ShareNodeRegistry(mounts).lookup('node-1', 'a'))?.map((s) => s.mount)).toEqual(['b']);
  });

  it('answers unknown only from a full view: UNAVAILABLE while a share cannot be read', async () => {
    const full = shares(['a', 'b', 'c']);
    await full.mounts.all();
    expect(await new ShareNodeRegistry(full.mounts).lookup('node-x', 'a')).toBeUndefined();
    const partial = shares(['a', 'b']);
    await partial.mounts.all();
    await expect(new ShareNodeRegistry(partial.mounts).lookup('node-x', 'a')).rejects.toMatchObject({
      kind: 'unavailable',
      message: expect.stringMatching(/node-x.*mount\(s\) c/),
    });
  });

  it("answers UNAVAILABLE, not unknown, when the volume's own mount is the one unmounted", async () => {
    const { mounts, layout } = shares(['b', 'c']);
    await mounts.all();
    await writeNode(layout('b'), record('node-1'));
    expect((await new ShareNodeRegistry(mounts).lookup('node-1', 'a'))?.map((s) => s.mount)).toEqual(['b']);
    await expect(new ShareNodeRegistry(mounts).lookup('node-x', 'a')).rejects.toMatchObject({
      kind: 'unavailable',
      message: expect.stringMatching(/mount\(s\) a/),
    });
  });

  it('still knows a node whose heartbeat stopped, marked stale', async () => {
    const { mounts, layout } = shares(['a', 'b', 'c']);
    await mounts.all();
    await writeNode(layout('a'), record('node-old', STALE_MS + 1000));
    expect(await new ShareNodeRegistry(mounts).lookup('node-old')).toEqual([expect.objectContaining({ mount: 'a', fresh: false })]);
  });

  it('names the nodes whose fresh record lists a volume as staged', async () => {
    const { mounts, layout } = shares(['a', 'b', 'c']);
    await mounts.all();
    await writeNode(layout('a'), record('node-1', 0, ['pvc-1']));
    await writeNode(layout('b'), record('node-1', 0, ['pvc-1']));
    await writeNode(layout('b'), record('node-2', 0, ['pvc-1', 'pvc-2']));
    await writeNode(layout('c'), record('node-gone', STALE_MS + 1000, ['pvc-1']));
    writeFileSync(join(layout('a').root, 'nodes', 'torn.json'), '{');
    const registry = new ShareNodeRegistry(mounts);
    expect(await registry.holders('pvc-1')).toEqual(['node-1', 'node-2']);
    expect(await registry.holders('pvc-2', ['a'])).toEqual([]);
    expect(await registry.holders('pvc-3')).toEqual([]);
  });

  it('cannot name holders from a partial view', async () => {
    const { mounts } = shares(['a']);
    await expect(new ShareNodeRegistry(mounts).holders('pvc-1')).rejects.toMatchObject({ kind: 'unavailable' });
    expect(await new ShareNodeRegistry(mounts).holders('pvc-1', ['a'])).toEqual([]);
  });

  it('forgets a record only when it is still older than the bound', async () => {
    const { mounts, layout } = shares(['a']);
    await mounts.all();
    await writeNode(layout('a'), record('node-old', 2 * 24 * 3600_000));
    await writeNode(layout('a'), record('node-new', 1000));
    expect(await forgetNode(layout('a'), 'node-new', 24 * 3600_000)).toBe(false);
    expect(await forgetNode(layout('a'), 'node-old', 24 * 3600_000)).toBe(true);
    expect((await readNodes(layout('a'))).map((e) => e.record?.node)).toEqual(['node-new']);
  });
});
