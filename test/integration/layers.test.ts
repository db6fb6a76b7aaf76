/**
 * qcow2 snapshots as layers on a mount without reflink (ext4): O(1) freezes of
 * detached volumes, the node switching a volume it serves while a writer runs,
 * and a kill at every step of both followed by a restart.
 */
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { closeSync, existsSync, mkdtempSync, openSync, readdirSync, readFileSync, readSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { status } from '@grpc/grpc-js';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { codeOf } from '../helpers/client.js';
import { blockCap, createRequest, MiB, mountCap } from '../helpers/csi.js';
import { kubeletPaths, leftovers } from '../helpers/node.js';
import { podAttacher, retryAborted, sha, sleep, writeSynced, Writer } from '../helpers/pod.js';
import { isRoot, rootOnlyReason } from '../helpers/root.js';
import { makeScratch, type Scratch } from '../helpers/scratch.js';
import { startDriver, type Driver } from '../helpers/server.js';
import { ifMade } from '../helpers/teardown.js';

function qemuIo(image: string, command: string): string {
  // Reads open read-only and share the image: a background merge may hold it, and never changes what it reads.
  const shared = command.startsWith('read') ? ['-r', '-U'] : [];
  return execFileSync('qemu-io', [...shared, '-f', 'qcow2', '-c', command, image], { encoding: 'utf8' });
}
function matches(image: string, pattern: number, offset = 0): boolean {
  try {
    return !/Pattern verification failed/.test(qemuIo(image, `read -P 0x${pattern.toString(16)} ${offset} 1M`));
  } catch (e) {
    if (/Pattern verification failed/.test(String((e as { stdout?: string }).stdout))) return false;
    throw e;
  }
}
/** `qemu-img check` exit 0: no corruption, no leaks. -U: a node may hold it. */
const checkClean = (image: string) => execFileSync('qemu-img', ['check', '-U', '-q', image], { encoding: 'utf8' });

describe.skipIf(!isRoot)('qcow2 snapshots as layers', () => {
  let share: Scratch;
  let kubelet: string;
  let sockDir: string;
  let driver: Driver;
  const c = (method: string, req: object) => retryAborted(() => driver.client.controller(method, req), 100, 100);
  const n = (method: string, req: object) => retryAborted(() => driver.client.node(method, req), 100, 100);
  /** One call, for tests that expect ABORTED. */
  const once = (method: string, req: object) => driver.client.controller(method, req);
  const tree = () => join(share.path, 'filedriver');
  const image = (id: string) => join(tree(), 'volumes', id, 'disk.qcow2');
  const snapImage = (id: string) => join(tree(), 'snapshots', id, 'disk.qcow2');
  const volMeta = (id: string) => JSON.parse(readFileSync(join(tree(), 'volumes', id, 'volume.json'), 'utf8'));
  const snapMeta = (id: string) => JSON.parse(readFileSync(join(tree(), 'snapshots', id, 'snapshot.json'), 'utf8'));
  const workFiles = (id: string) => readdirSync(join(tree(), 'volumes', id)).filter((f) => f !== 'disk.qcow2' && f !== 'volume.json');
  const start = async (env: Record<string, string> = {}) => {
    driver = await startDriver({ mounts: { plain: share.path }, dir: sockDir, args: ['--kubelet-dir', kubelet, '--over-subscription', '10'], env });
  };
  const paths = (id: string) => kubeletPaths(kubelet, id);
  /** Retries CreateSnapshot as the snapshotter does until the snapshot is ready. */
  async function snapshotReady(name: string, source: string): Promise<Record<string, any>> {
    for (let i = 0; i < 150; i++) {
      const res = await c('CreateSnapshot', { name, source_volume_id: source });
      if (res.snapshot.ready_to_use === true) return res.snapshot;
      await sleep(200);
    }
    throw new Error(`snapshot ${name} never became ready`);
  }
  /** Volumes a test attached are detached after it whatever happened, so one failure leaks nothing. */
  const pod = podAttacher(
    () => ({ controller: c, node: n }),
    (id) => paths(id),
    mountCap(),
  );
  const { attached, attach, detach } = pod;
  afterEach(async () => {
    // A kill test that failed may leave its driver dead: a live one is needed to detach.
    if (attached.size > 0 && (driver.process.exitCode !== null || driver.process.signalCode !== null)) await start();
    for (const id of [...attached].reverse()) await detach(id).catch(() => undefined);
  });

  beforeAll(async () => {
    rootOnlyReason();
    share = makeScratch('ext4', 1024);
    kubelet = mkdtempSync(join(tmpdir(), 'fdtest-kubelet-'));
    sockDir = mkdtempSync(join(tmpdir(), 'fdtest-sock-'));
    await start();
  });
  afterAll(async () => {
    await ifMade(driver)?.stop();
    ifMade(share)?.cleanup();
    for (const d of [kubelet, sockDir]) if (ifMade(d) !== undefined) rmSync(d, { recursive: true, force: true });
  });

  it('freezes a detached volume as its snapshot without copying, and the volume goes on in an overlay', async () => {
    await c('CreateVolume', createRequest('pvc-lay'));
    qemuIo(image('pvc-lay'), 'write -P 0xab 0 1M');
    const before = statSync(image('pvc-lay')).ino;
    const snap = await c('CreateSnapshot', { name: 'snap-lay-1', source_volume_id: 'pvc-lay' });
    expect(snap.snapshot).toMatchObject({ snapshot_id: 'snap-lay-1', ready_to_use: true, size_bytes: String(64n * MiB) });
    // The snapshot is the volume's former image itself: nothing was copied.
    expect(statSync(snapImage('snap-lay-1')).ino).toBe(before);
    expect(snapMeta('snap-lay-1')).toMatchObject({ method: 'layer', backing: null, pending: false });
    expect(volMeta('pvc-lay').backing).toBe('snap-lay-1');
    expect(readdirSync(join(tree(), 'snapshots/snap-lay-1/refs'))).toEqual(['pvc-lay']);
    expect(workFiles('pvc-lay')).toEqual([]);

    qemuIo(image('pvc-lay'), 'write -P 0xcd 0 1M');
    expect(matches(snapImage('snap-lay-1'), 0xab)).toBe(true);
    expect(matches(image('pvc-lay'), 0xcd)).toBe(true);
    // A retry answers the same; a second snapshot stacks on the first.
    expect((await c('CreateSnapshot', { name: 'snap-lay-1', source_volume_id: 'pvc-lay' })).snapshot).toEqual(snap.snapshot);
    await c('CreateSnapshot', { name: 'snap-lay-2', source_volume_id: 'pvc-lay' });
    expect(snapMeta('snap-lay-2')).toMatchObject({ method: 'layer', backing: 'snap-lay-1' });
    expect(readdirSync(join(tree(), 'snapshots/snap-lay-1/refs'))).toEqual(['snap-lay-2']);
    for (const img of [image('pvc-lay'), snapImage('snap-lay-1'), snapImage('snap-lay-2')]) checkClean(img);

    // A linked clone of the older snapshot reads its data.
    await c('CreateVolume', createRequest('pvc-lay-clone', { volume_content_source: { snapshot: { snapshot_id: 'snap-lay-1' } } }));
    expect(matches(image('pvc-lay-clone'), 0xab)).toBe(true);

    // Deleted snapshots that back something only hide; deleting the dependents frees everything.
    for (const id of ['snap-lay-1', 'snap-lay-2']) await c('DeleteSnapshot', { snapshot_id: id });
    expect((await c('ListSnapshots', {})).entries.map((e: any) => e.snapshot.snapshot_id)).not.toContain('snap-lay-1');
    // The newer one has a single dependent, the volume: it is merged into it in the background.
    await merged('snap-lay-2');
    expect(matches(image('pvc-lay'), 0xcd)).toBe(true);
    for (const id of ['pvc-lay-clone', 'pvc-lay']) await c('DeleteVolume', { volume_id: id });
    expect(readdirSync(join(tree(), 'snapshots')).filter((s) => s.startsWith('snap-lay'))).toEqual([]);
  });

  it('waits for the node while the volume is published, and finishes once it is not', async () => {
    await c('CreateVolume', createRequest('pvc-wait'));
    qemuIo(image('pvc-wait'), 'write -P 0x21 0 1M');
    await c('ControllerPublishVolume', { volume_id: 'pvc-wait', node_id: 'node-a', volume_capability: mountCap(), readonly: false });
    // Published, not staged: no node switches it yet.
    const pending = await c('CreateSnapshot', { name: 'snap-wait', source_volume_id: 'pvc-wait' });
    expect(pending.snapshot).toMatchObject({ snapshot_id: 'snap-wait', ready_to_use: false });
    const listed = await c('ListSnapshots', { snapshot_id: 'snap-wait' });
    expect(listed.entries[0].snapshot.ready_to_use).toBe(false);
    // Nothing that needs the frozen image, or changes the volume's, goes ahead meanwhile.
    expect(
      await codeOf(c('CreateVolume', createRequest('pvc-wait-clone', { volume_content_source: { snapshot: { snapshot_id: 'snap-wait' } } }))),
    ).toBe(status.FAILED_PRECONDITION);
    expect(await codeOf(once('ControllerExpandVolume', { volume_id: 'pvc-wait', capacity_range: { required_bytes: String(128n * MiB) } }))).toBe(
      status.ABORTED,
    );
    expect(await codeOf(once('CreateSnapshot', { name: 'snap-wait-2', source_volume_id: 'pvc-wait' }))).toBe(status.ABORTED);

    await c('ControllerUnpublishVolume', { volume_id: 'pvc-wait', node_id: 'node-a' });
    expect((await c('CreateSnapshot', { name: 'snap-wait', source_volume_id: 'pvc-wait' })).snapshot.ready_to_use).toBe(true);
    expect(volMeta('pvc-wait').backing).toBe('snap-wait');
    expect(matches(snapImage('snap-wait'), 0x21)).toBe(true);
    expect(workFiles('pvc-wait')).toEqual([]);
    await c('DeleteVolume', { volume_id: 'pvc-wait' });
    await c('DeleteSnapshot', { snapshot_id: 'snap-wait' });
    expect(existsSync(join(tree(), 'snapshots/snap-wait'))).toBe(false);
  });

  it('stages a volume whose second snapshot waits for the node onto that snapshot, with the data under it', async () => {
    const id = 'pvc-rs';
    await c('CreateVolume', createRequest(id, { volume_capabilities: [blockCap()] }));
    qemuIo(image(id), 'write -P 0x11 0 1M');
    await c('CreateSnapshot', { name: 'snap-rs-0', source_volume_id: id });
    qemuIo(image(id), 'write -P 0x22 1M 1M'); // lands in the layer that becomes snap-rs-1
    // Published, not staged: the switch waits for the node, and the stage makes it.
    const block = podAttacher(
      () => ({ controller: c, node: n }),
      (v) => ({ staging: paths(v).staging, target: paths(v).device }),
      blockCap(),
    );
    await c('ControllerPublishVolume', { volume_id: id, node_id: 'node-a', volume_capability: blockCap(), readonly: false });
    expect((await c('CreateSnapshot', { name: 'snap-rs-1', source_volume_id: id })).snapshot.ready_to_use).toBe(false);
    try {
      await block.attach(id); // volume.json still names snap-rs-0 as the image's backing
      const device = openSync(paths(id).device, 'r');
      const at = (offset: number) => {
        const buf = Buffer.alloc(4096);
        readSync(device, buf, 0, buf.length, offset);
        return buf;
      };
      try {
        expect(at(1024 * 1024).equals(Buffer.alloc(4096, 0x22))).toBe(true);
        expect(at(0).equals(Buffer.alloc(4096, 0x11))).toBe(true);
      } finally {
        closeSync(device);
      }
      expect((await snapshotReady('snap-rs-1', id)).ready_to_use).toBe(true);
      expect(volMeta(id).backing).toBe('snap-rs-1');
    } finally {
      await block.detach(id);
    }
    expect(matches(snapImage('snap-rs-1'), 0x22, 1024 * 1024)).toBe(true);
    for (const img of [image(id), snapImage('snap-rs-0'), snapImage('snap-rs-1')]) checkClean(img);
    await c('DeleteVolume', { volume_id: id });
    for (const snap of ['snap-rs-1', 'snap-rs-0']) await c('DeleteSnapshot', { snapshot_id: snap });
    expect(leftovers(kubelet)).toEqual([]);
  });

  describe('a volume a pod is writing', () => {
    let writer: Writer | undefined;
    const stopWriter = async (): Promise<number | null> => {
      const w = writer;
      writer = undefined;
      return w === undefined ? null : w.stop();
    };
    // Before the outer afterEach detaches: an open file would keep the target busy.
    afterEach(async () => {
      await stopWriter();
    });

    it('is snapshotted online: the clone holds exactly what was synced before, the writer sees no error', async () => {
      await c('CreateVolume', createRequest('pvc-live', { capacity_range: { required_bytes: String(256n * MiB) } }));
      await attach('pvc-live');
      const target = paths('pvc-live').target;
      const before = writeSynced(join(target, 'before.bin'), randomBytes(4 * 1024 * 1024));
      // A pod writing on: synced 1 MiB files, round and round.
      writer = new Writer(target);
      const frozenIno = statSync(image('pvc-live')).ino;

      const snap = await snapshotReady('snap-live', 'pvc-live');
      expect(snap.ready_to_use).toBe(true);
      expect(statSync(snapImage('snap-live')).ino).toBe(frozenIno);
      expect(snapMeta('snap-live').method).toBe('layer');
      expect(volMeta('pvc-live').backing).toBe('snap-live');
      expect(workFiles('pvc-live')).toEqual([]);
      const after = writeSynced(join(target, 'after.bin'), randomBytes(1024 * 1024));
      expect(sha(join(target, 'after.bin'))).toBe(after);
      expect(writer.running).toBe(true); // still writing, never failed

      await c(
        'CreateVolume',
        createRequest('pvc-live-clone', {
          capacity_range: { required_bytes: String(256n * MiB) },
          volume_content_source: { snapshot: { snapshot_id: 'snap-live' } },
        }),
      );
      await attach('pvc-live-clone');
      const cloneTarget = paths('pvc-live-clone').target;
      expect(sha(join(cloneTarget, 'before.bin'))).toBe(before);
      expect(existsSync(join(cloneTarget, 'after.bin'))).toBe(false);
      await detach('pvc-live-clone');

      expect(writer.running).toBe(true);
      expect(await stopWriter()).not.toBe(7);
      await detach('pvc-live');
      for (const img of [image('pvc-live'), snapImage('snap-live')]) checkClean(img);
      for (const id of ['pvc-live-clone', 'pvc-live']) await c('DeleteVolume', { volume_id: id });
      await c('DeleteSnapshot', { snapshot_id: 'snap-live' });
      expect(leftovers(kubelet)).toEqual([]);
    });

    it('is cloned while in use: the clone has the data, the source keeps running', async () => {
      await c('CreateVolume', createRequest('pvc-src-live', { capacity_range: { required_bytes: String(256n * MiB) } }));
      await attach('pvc-src-live');
      const sum = writeSynced(join(paths('pvc-src-live').target, 'data.bin'), randomBytes(2 * 1024 * 1024));
      const clone = createRequest('pvc-clone-live', {
        capacity_range: { required_bytes: String(256n * MiB) },
        volume_content_source: { volume: { volume_id: 'pvc-src-live' } },
      });
      let code: number | 'OK' = status.ABORTED;
      for (let i = 0; i < 150 && code === status.ABORTED; i++) {
        code = await codeOf(once('CreateVolume', clone));
        if (code === status.ABORTED) await sleep(200);
      }
      expect(code).toBe('OK');
      await attach('pvc-clone-live');
      expect(sha(join(paths('pvc-clone-live').target, 'data.bin'))).toBe(sum);
      // The source still takes writes.
      const more = writeSynced(join(paths('pvc-src-live').target, 'more.bin'), randomBytes(1024 * 1024));
      expect(sha(join(paths('pvc-src-live').target, 'more.bin'))).toBe(more);
      for (const id of ['pvc-clone-live', 'pvc-src-live']) await detach(id);
      for (const id of ['pvc-clone-live', 'pvc-src-live']) await c('DeleteVolume', { volume_id: id });
      expect(readdirSync(join(tree(), 'snapshots')).filter((s) => s.includes('src-live'))).toEqual([]);
      expect(leftovers(kubelet)).toEqual([]);
    });
  });

  /** Waits for the background merge to remove a deleted snapshot. */
  async function merged(snapshotId: string): Promise<void> {
    for (let i = 0; i < 300 && existsSync(join(tree(), 'snapshots', snapshotId)); i++) await sleep(100);
    expect(existsSync(join(tree(), 'snapshots', snapshotId))).toBe(false);
  }
  /** Bytes the driver's tree holds on the share (allocated blocks, as du counts them). */
  const allocated = () => BigInt(execFileSync('du', ['-s', '--block-size=1', tree()], { encoding: 'utf8' }).split('\t')[0] ?? '0');

  describe('merging deleted snapshots', () => {
    it.each([
      ['oldest first', ['snap-m-1', 'snap-m-2']],
      ['newest first', ['snap-m-2', 'snap-m-1']],
    ])('gives the space back when snapshots of a detached volume are deleted %s', async (_order, order) => {
      const id = `pvc-m-${order[0] ?? ''}`;
      await c('CreateVolume', createRequest(id));
      qemuIo(image(id), 'write -P 0x11 0 8M');
      await c('CreateSnapshot', { name: 'snap-m-1', source_volume_id: id });
      qemuIo(image(id), 'write -P 0x22 0 4M');
      await c('CreateSnapshot', { name: 'snap-m-2', source_volume_id: id });
      qemuIo(image(id), 'write -P 0x33 0 2M');
      const before = allocated();
      for (const snap of order) await c('DeleteSnapshot', { snapshot_id: snap });
      for (const snap of order) await merged(snap);
      expect(volMeta(id).backing).toBeNull();
      // What the volume reads never changed: 2 MiB of 0x33, 2 of 0x22, 4 of 0x11.
      expect(matches(image(id), 0x33, 0)).toBe(true);
      expect(matches(image(id), 0x22, 2 * 1024 * 1024)).toBe(true);
      expect(matches(image(id), 0x11, 4 * 1024 * 1024)).toBe(true);
      checkClean(image(id));
      // Three layers held 14 MiB; the merged volume holds 8.
      expect(before - allocated()).toBeGreaterThanOrEqual(5n * MiB);
      await c('DeleteVolume', { volume_id: id });
    });

    it('keeps a deleted snapshot that a clone still reads, and merges it once the clone is gone', async () => {
      await c('CreateVolume', createRequest('pvc-mc'));
      qemuIo(image('pvc-mc'), 'write -P 0x44 0 1M');
      await c('CreateSnapshot', { name: 'snap-mc', source_volume_id: 'pvc-mc' });
      await c('CreateVolume', createRequest('pvc-mc-clone', { volume_content_source: { snapshot: { snapshot_id: 'snap-mc' } } }));
      await c('DeleteSnapshot', { snapshot_id: 'snap-mc' });
      await sleep(300);
      expect(existsSync(snapImage('snap-mc'))).toBe(true);
      expect(matches(image('pvc-mc-clone'), 0x44)).toBe(true);
      await c('DeleteVolume', { volume_id: 'pvc-mc-clone' });
      await merged('snap-mc');
      expect(matches(image('pvc-mc'), 0x44)).toBe(true);
      await c('DeleteVolume', { volume_id: 'pvc-mc' });
    });

    it.each(['merge:rebased', 'merge:recorded'])('a controller killed at %s finishes the merge after its restart', async (step) => {
      const id = `pvc-mk-${step.split(':')[1] ?? ''}`;
      await c('CreateVolume', createRequest(id));
      qemuIo(image(id), 'write -P 0x55 0 1M');
      await c('CreateSnapshot', { name: `snap-${id}`, source_volume_id: id });
      qemuIo(image(id), 'write -P 0x66 1M 1M');
      await driver.stop();
      await start({ FILEDRIVER_CRASH_AT: step });
      const died = new Promise((r) => driver.process.once('exit', r));
      await c('DeleteSnapshot', { snapshot_id: `snap-${id}` });
      await died;
      await driver.kill();
      await start();
      await merged(`snap-${id}`);
      expect(volMeta(id).backing).toBeNull();
      expect(matches(image(id), 0x55, 0)).toBe(true);
      expect(matches(image(id), 0x66, 1024 * 1024)).toBe(true);
      checkClean(image(id));
      await c('DeleteVolume', { volume_id: id });
    });

    it('merges online, through the node serving the volume, while it is written', async () => {
      const id = 'pvc-m-live';
      await c('CreateVolume', createRequest(id, { capacity_range: { required_bytes: String(256n * MiB) } }));
      await attach(id);
      const target = paths(id).target;
      const sums: Record<string, string> = {};
      for (const snap of ['snap-ml-1', 'snap-ml-2', 'snap-ml-3']) {
        sums[snap] = writeSynced(join(target, `${snap}.bin`), randomBytes(2 * 1024 * 1024));
        await snapshotReady(snap, id);
      }
      // Oldest first (a retention policy), then the newest, then the middle one: layers under
      // another snapshot merge into it online.
      for (const snap of ['snap-ml-1', 'snap-ml-3', 'snap-ml-2']) {
        await c('DeleteSnapshot', { snapshot_id: snap });
        if (snap !== 'snap-ml-3') await merged(snap);
        const extra = writeSynced(join(target, `after-${snap}.bin`), randomBytes(1024 * 1024));
        expect(sha(join(target, `after-${snap}.bin`))).toBe(extra);
      }
      // The newest lies right under the served top, which qemu cannot stream into: it waits, the one layer left.
      expect(snapMeta('snap-ml-3')).toMatchObject({ deleted: true, backing: null });
      expect(volMeta(id).backing).toBe('snap-ml-3');
      // The next snapshot puts it under a layer that can take it.
      await snapshotReady('snap-ml-4', id);
      await merged('snap-ml-3');
      expect(snapMeta('snap-ml-4').backing).toBeNull();
      await c('DeleteSnapshot', { snapshot_id: 'snap-ml-4' });
      for (const [snap, sum] of Object.entries(sums)) expect(sha(join(target, `${snap}.bin`))).toBe(sum);
      expect(workFiles(id)).toEqual([]);
      // Detached, the last layer merges into the volume itself.
      await detach(id);
      await merged('snap-ml-4');
      expect(volMeta(id).backing).toBeNull();
      checkClean(image(id));
      await c('DeleteVolume', { volume_id: id });
      expect(leftovers(kubelet)).toEqual([]);
    });
  });

  describe('killed at every step', () => {
    it.each(['layer:intent', 'layer:frozen', 'layer:overlay', 'layer:switched', 'layer:recorded'])(
      'the controller killed at %s: the retry after a restart finishes the snapshot, nothing half-made is left',
      async (step) => {
        const id = `pvc-k-${step.split(':')[1] ?? ''}`;
        const name = `snap-k-${step.split(':')[1] ?? ''}`;
        await c('CreateVolume', createRequest(id));
        qemuIo(image(id), 'write -P 0x5a 0 1M');
        await driver.stop();
        await start({ FILEDRIVER_CRASH_AT: step });
        expect(await codeOf(c('CreateSnapshot', { name, source_volume_id: id }))).toBe(status.UNAVAILABLE);
        await driver.kill();
        await start();
        expect((await snapshotReady(name, id)).ready_to_use).toBe(true);
        expect(volMeta(id).backing).toBe(name);
        expect(snapMeta(name)).toMatchObject({ method: 'layer', pending: false });
        expect(workFiles(id)).toEqual([]);
        qemuIo(image(id), 'write -P 0x6b 0 1M');
        expect(matches(snapImage(name), 0x5a)).toBe(true);
        expect(matches(image(id), 0x6b)).toBe(true);
        for (const img of [image(id), snapImage(name)]) checkClean(img);
        await c('DeleteSnapshot', { snapshot_id: name });
        await c('DeleteVolume', { volume_id: id });
        expect(existsSync(join(tree(), 'snapshots', name))).toBe(false);
      },
    );

    it('the node killed between switching its export and renaming: the restarted node finishes, writes go on', async () => {
      const id = 'pvc-k-node';
      await c('CreateVolume', createRequest(id, { capacity_range: { required_bytes: String(256n * MiB) } }));
      await attach(id);
      const target = paths(id).target;
      const first = writeSynced(join(target, 'first.bin'), randomBytes(1024 * 1024));
      await driver.stop();
      await start({ FILEDRIVER_CRASH_AT: 'node-layer:switched' });
      const died = new Promise((r) => driver.process.once('exit', r));
      // Answered "not ready", or not at all: the process dies while the controller waits for the switch.
      const answer = await driver.client.controller('CreateSnapshot', { name: 'snap-k-node', source_volume_id: id }).then(
        (r) => r.snapshot.ready_to_use as boolean,
        (e: unknown) => (e as { code?: number }).code,
      );
      expect([false, status.UNAVAILABLE]).toContain(answer);
      await died; // the node's poll switched the export, then was killed
      await driver.kill();
      // The export outlives the plugin: the pod's writes go on, into the new layer.
      const second = writeSynced(join(target, 'second.bin'), randomBytes(1024 * 1024));
      await start();
      expect((await snapshotReady('snap-k-node', id)).ready_to_use).toBe(true);
      expect(workFiles(id)).toEqual([]);
      expect(sha(join(target, 'first.bin'))).toBe(first);
      expect(sha(join(target, 'second.bin'))).toBe(second);
      await detach(id);
      for (const img of [image(id), snapImage('snap-k-node')]) checkClean(img);
      await c('DeleteVolume', { volume_id: id });
      await c('DeleteSnapshot', { snapshot_id: 'snap-k-node' });
      expect(leftovers(kubelet)).toEqual([]);
    });
  });
});
