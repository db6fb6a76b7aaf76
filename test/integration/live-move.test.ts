/**
 * Moving a qcow2 volume to another mount while a pod writes to it: the node's
 * qemu carries the writes over (ControllerModifyVolume retried as the resizer
 * does), on two ext4 shares without reflink; and a kill at each step.
 */
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
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

describe.skipIf(!isRoot)('live moves', () => {
  let a: Scratch;
  let b: Scratch;
  let kubelet: string;
  let sockDir: string;
  let driver: Driver;
  let writer: Writer | undefined;
  const stopWriter = async (): Promise<number | null> => {
    const w = writer;
    writer = undefined;
    return w === undefined ? null : w.stop();
  };

  const c = (method: string, req: object) => retryAborted(() => driver.client.controller(method, req));
  const n = (method: string, req: object) => retryAborted(() => driver.client.node(method, req));
  const start = async (env: Record<string, string> = {}) => {
    driver = await startDriver({
      mounts: { a: a.path, b: b.path },
      dir: sockDir,
      args: ['--kubelet-dir', kubelet, '--over-subscription', '10'],
      env,
    });
  };
  const paths = (id: string) => kubeletPaths(kubelet, id);
  const volDir = (s: Scratch, id: string) => join(s.path, 'filedriver/volumes', id);
  const image = (s: Scratch, id: string) => join(volDir(s, id), 'disk.qcow2');
  /** The resizer's loop: ControllerModifyVolume until it answers OK. */
  const moveTo = (id: string, mount: string) => c('ControllerModifyVolume', { volume_id: id, mutable_parameters: { mount } });

  const pod = podAttacher(
    () => ({ controller: c, node: n }),
    (id) => paths(id),
    mountCap(),
  );
  const { attached, attach, detach } = pod;
  beforeAll(async () => {
    rootOnlyReason();
    a = makeScratch('ext4', 768);
    b = makeScratch('ext4', 768);
    kubelet = mkdtempSync(join(tmpdir(), 'fdtest-kubelet-'));
    sockDir = mkdtempSync(join(tmpdir(), 'fdtest-sock-'));
    await start();
  });
  afterEach(async () => {
    await stopWriter();
    // A kill test that failed may leave its driver dead: a live one is needed to detach.
    if (attached.size > 0 && (driver.process.exitCode !== null || driver.process.signalCode !== null)) await start();
    for (const id of [...attached]) await detach(id).catch(() => undefined);
  });
  afterAll(async () => {
    await ifMade(driver)?.stop();
    ifMade(a)?.cleanup();
    ifMade(b)?.cleanup();
    for (const d of [kubelet, sockDir]) if (ifMade(d) !== undefined) rmSync(d, { recursive: true, force: true });
  });

  it('moves a published qcow2 volume, with a snapshot layer, while it is written: same data, no write error, old copy gone', async () => {
    const id = 'pvc-live-move';
    await c('CreateVolume', createRequest(id, { parameters: { mounts: 'a' }, capacity_range: { required_bytes: String(256n * MiB) } }));
    await attach(id);
    const target = paths(id).target;
    const sums: Record<string, string> = { first: writeSynced(join(target, 'first.bin'), randomBytes(4 * 1024 * 1024)) };
    // A layer under the top: the move flattens the chain into the new base.
    for (let i = 0; i < 100 && (await c('CreateSnapshot', { name: 'snap-before-move', source_volume_id: id })).snapshot.ready_to_use !== true; i++)
      await sleep(200);
    sums['second'] = writeSynced(join(target, 'second.bin'), randomBytes(2 * 1024 * 1024));
    writer = new Writer(target);

    await moveTo(id, 'b');
    expect(existsSync(volDir(a, id))).toBe(false);
    const record = JSON.parse(readFileSync(join(volDir(b, id), 'volume.json'), 'utf8'));
    expect(record).toMatchObject({ id, publications: [{ node: 'node-a' }] });
    expect(record.movedFrom).toBeUndefined();
    expect(readdirSync(join(b.path, 'filedriver/moving'))).toEqual([]);
    expect((await c('ControllerGetVolume', { volume_id: id })).volume.volume_context.mount).toBe('b');
    // The pod keeps writing, now to mount b.
    sums['third'] = writeSynced(join(target, 'third.bin'), randomBytes(1024 * 1024));
    expect(writer.running).toBe(true);
    expect(await stopWriter()).not.toBe(7);
    for (const [name, sum] of Object.entries(sums)) expect(sha(join(target, `${name}.bin`))).toBe(sum);
    // The snapshot stays where it was taken, no longer backing the volume.
    expect(existsSync(join(a.path, 'filedriver/snapshots/snap-before-move/disk.qcow2'))).toBe(true);
    expect(readdirSync(join(a.path, 'filedriver/snapshots/snap-before-move/refs'))).toEqual([]);

    // Staged afresh, the volume reads from mount b alone.
    await detach(id);
    execFileSync('qemu-img', ['check', '-q', image(b, id)]);
    await attach(id);
    for (const [name, sum] of Object.entries(sums)) expect(sha(join(target, `${name}.bin`))).toBe(sum);
    expect(readFileSync('/proc/self/mountinfo', 'utf8')).not.toContain(a.path + '/filedriver');
    await detach(id);
    await c('DeleteVolume', { volume_id: id });
    await c('DeleteSnapshot', { snapshot_id: 'snap-before-move' });
    expect(leftovers(kubelet)).toEqual([]);
  });

  it('refuses to move a published raw volume or to convert a published volume, naming why', async () => {
    await c('CreateVolume', createRequest('pvc-raw-pub', { parameters: { mounts: 'a', format: 'raw' }, volume_capabilities: [blockCap()] }));
    await c('ControllerPublishVolume', { volume_id: 'pvc-raw-pub', node_id: 'node-a', volume_capability: blockCap(), readonly: false });
    const raw = await driver.client
      .controller('ControllerModifyVolume', { volume_id: 'pvc-raw-pub', mutable_parameters: { mount: 'b' } })
      .catch((e: unknown) => e as { code: number; details: string });
    expect(raw).toMatchObject({ code: status.FAILED_PRECONDITION, details: expect.stringMatching(/raw image .* moves only while detached/) });
    await c('ControllerUnpublishVolume', { volume_id: 'pvc-raw-pub', node_id: 'node-a' });
    await c('DeleteVolume', { volume_id: 'pvc-raw-pub' });
  });

  it('finishes a move whose pod went away half-way, without the node', async () => {
    const id = 'pvc-move-gone';
    await c('CreateVolume', createRequest(id, { parameters: { mounts: 'a' } }));
    await attach(id);
    const sum = writeSynced(join(paths(id).target, 'data.bin'), randomBytes(1024 * 1024));
    // One try: the node then switches in the background; the pod goes before the move is done.
    expect(await codeOf(driver.client.controller('ControllerModifyVolume', { volume_id: id, mutable_parameters: { mount: 'b' } }))).toBe(
      status.ABORTED,
    );
    for (let i = 0; i < 100 && JSON.parse(readFileSync(join(volDir(a, id), 'moving.json'), 'utf8')).switched !== true; i++) await sleep(100);
    // Mid-move the source image lacks the newest writes: no snapshot is cut from it.
    expect(await codeOf(driver.client.controller('CreateSnapshot', { name: 'snap-mid-move', source_volume_id: id }))).toBe(status.ABORTED);
    const late = writeSynced(join(paths(id).target, 'late.bin'), randomBytes(1024 * 1024));
    await detach(id);
    // Staging is refused until the move is done: the source lacks the late writes.
    await moveTo(id, 'b');
    await attach(id);
    expect(sha(join(paths(id).target, 'data.bin'))).toBe(sum);
    expect(sha(join(paths(id).target, 'late.bin'))).toBe(late);
    await detach(id);
    await c('DeleteVolume', { volume_id: id });
  });

  it.each(['node-move:switched', 'move:based', 'node-move:repointed', 'move:arrived'])(
    'killed at %s: the restarted driver finishes the move, no write lost',
    async (step) => {
      const id = `pvc-mv-${step.replace(/[^a-z]/g, '')}`;
      await c('CreateVolume', createRequest(id, { parameters: { mounts: 'a' } }));
      await attach(id);
      const target = paths(id).target;
      const sum = writeSynced(join(target, 'before.bin'), randomBytes(1024 * 1024));
      await driver.stop();
      await start({ FILEDRIVER_CRASH_AT: step });
      const died = new Promise((r) => driver.process.once('exit', r));
      for (let i = 0; i < 100 && driver.process.exitCode === null && driver.process.signalCode === null; i++) {
        await codeOf(driver.client.controller('ControllerModifyVolume', { volume_id: id, mutable_parameters: { mount: 'b' } }));
        await sleep(200);
      }
      await died;
      await driver.kill();
      // The export outlived the plugin: the pod writes on, wherever its top layer is now.
      const during = writeSynced(join(target, 'during.bin'), randomBytes(1024 * 1024));
      await start();
      await moveTo(id, 'b');
      expect(existsSync(volDir(a, id))).toBe(false);
      expect(sha(join(target, 'before.bin'))).toBe(sum);
      expect(sha(join(target, 'during.bin'))).toBe(during);
      await detach(id);
      execFileSync('qemu-img', ['check', '-q', image(b, id)]);
      await attach(id);
      expect(sha(join(target, 'during.bin'))).toBe(during);
      await detach(id);
      await c('DeleteVolume', { volume_id: id });
      expect(leftovers(kubelet)).toEqual([]);
    },
  );
});
