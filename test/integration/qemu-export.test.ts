/**
 * qcow2 through the node's data plane (one qemu-storage-daemon, FUSE exports)
 * and a loop device, with the real daemon, for each qemu at hand (the private
 * qemu 11 and the system's 7.2): data round trip, the loop's I/O mode, growth
 * over QMP, stop from a fresh process, a crashed daemon, image locks, two
 * volumes in one daemon, read-only exports and the O_DIRECT fallback.
 */
import { execFileSync } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, mkdtempSync, openSync, readdirSync, readFileSync, readSync, rmSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { DriverError } from '../../src/domain/errors.js';
import { makeRunner } from '../../src/system/command.js';
import { DataPlane } from '../../src/system/data-plane.js';
import { makeFilesystems } from '../../src/system/filesystems.js';
import { makeLoopDevices } from '../../src/system/loop-devices.js';
import { readMountInfo, mountAt } from '../../src/system/mountinfo.js';
import { makeQemuExports, type ExportHandle, type QemuExports, type StartOptions } from '../../src/system/qemu-export.js';
import { findQemu, systemQemu, type QemuInstall } from '../../src/system/qemu-tools.js';
import { rootOnlyReason } from '../helpers/root.js';
import { makeScratch, type Scratch } from '../helpers/scratch.js';
import { exited, untilExited } from '../helpers/wait.js';

const MiB = 1024n * 1024n;
const silent = pino({ level: 'silent' });
const mounted = async (path: string): Promise<boolean> => mountAt(await readMountInfo(), path) !== undefined;

/** ramfs has no O_DIRECT (tmpfs has it since Linux 6.6). */
function makeRamfs(): Scratch {
  const base = mkdtempSync(join(tmpdir(), 'fdtest-'));
  const path = join(base, 'mnt');
  mkdirSync(path);
  execFileSync('mount', ['-t', 'ramfs', 'fdtest-ramfs', path]);
  return { path, cleanup: () => (execFileSync('umount', [path]), rmSync(base, { recursive: true, force: true })) };
}

const tag = (n: number): string => n.toString(16).padStart(16, '0');
const installs: QemuInstall[] = [findQemu(undefined), systemQemu].filter((q, i, all) => all.findIndex((o) => o.source === q.source) === i);
if (installs.length === 1) process.stderr.write('qemu-export.test: no private qemu (scripts/install-qemu.sh); testing the system qemu only\n');

// rootOnlyReason() prints why when the suite is skipped.
describe
  .skipIf(rootOnlyReason() !== undefined)
  .each(installs.map((q) => [q.manifest === undefined ? 'system qemu' : `qemu ${q.manifest.version}`, q] as const))(
  'FUSE exports of the data plane (%s)',
  (_name, qemu) => {
    const run = makeRunner(silent, { qemu });
    const planeDir = mkdtempSync(join(tmpdir(), 'fdtest-dp-'));
    const plane = (): DataPlane => new DataPlane(planeDir, 'managed', run, silent);
    /** A new adapter over a new DataPlane object: what a restarted plugin has. */
    const fresh = (): QemuExports => makeQemuExports(plane(), run, silent);
    const exportsA = fresh();
    const loops = makeLoopDevices(run);
    const fs = makeFilesystems(run);
    const cleanups: (() => unknown)[] = [];
    const planePid = (): number => Number(readFileSync(join(planeDir, 'qsd.pid'), 'utf8'));
    const planeRunning = (): boolean => existsSync(join(planeDir, 'qsd.pid')) && !exited(planePid());

    afterEach(async () => {
      for (const c of cleanups.splice(0).reverse()) await c();
    });
    afterAll(async () => {
      // Every test stopped its exports: the idle daemon goes, and nothing of it stays.
      const running = planeRunning();
      expect(await plane().stopIfIdle()).toBe(running);
      expect(planeRunning()).toBe(false);
      rmSync(planeDir, { recursive: true, force: true });
    });

    function share(kind: 'xfs' | 'ramfs' = 'xfs'): string {
      const s = kind === 'xfs' ? makeScratch('xfs', 512) : makeRamfs();
      cleanups.push(() => s.cleanup());
      return s.path;
    }

    function qcow2(dir: string, size: bigint, name = 'disk.qcow2'): string {
      const file = join(dir, name);
      execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', '-o', 'preallocation=metadata', file, String(size)]);
      return file;
    }

    const options = (stateDir: string, readOnly = false, format: 'qcow2' | 'raw' = 'qcow2', n = 1): StartOptions => ({
      format,
      readOnly,
      stateDir,
      tag: tag(n),
    });

    async function start(image: string, stateDir: string, readOnly = false, format: 'qcow2' | 'raw' = 'qcow2', n = 1): Promise<ExportHandle> {
      const h = await exportsA.start(image, options(stateDir, readOnly, format, n));
      cleanups.push(() => exportsA.stop(h));
      return h;
    }

    async function attach(h: ExportHandle, readOnly = false): Promise<string> {
      const dev = await loops.attach(h.exportFile, { readOnly, directIo: h.loopDirectIo === true, overExport: true });
      cleanups.push(async () => {
        for (const d of await loops.findByFile(h.exportFile)) await loops.detach(d.device);
      });
      // Direct I/O over the export only where it does asynchronous direct I/O: 7.2's corrupts data so.
      expect(dev.directIo).toBe(h.loopDirectIo === true);
      return dev.device;
    }

    it('exports a qcow2 image that takes a filesystem, data and a clean stop; direct I/O only on qemu ≥ 11', async () => {
      const dir = share();
      const h = await start(qcow2(dir, 64n * MiB), join(dir, 'state'));
      expect(h).toMatchObject({ aio: 'io_uring', directIo: true, readOnly: false, format: 'qcow2', loopDirectIo: qemu.manifest !== undefined });
      if (qemu.manifest !== undefined) expect(h.threads).toBeGreaterThan(0);
      expect(await exportsA.isAlive(h)).toBe(true);
      const device = await attach(h);
      expect(await loops.size(device)).toBe(64n * MiB);
      await fs.formatIfBlank(device, 'ext4');
      const mnt = join(dir, 'mnt');
      mkdirSync(mnt);
      await fs.mount(device, mnt, { fsType: 'ext4', flags: [], readOnly: false });
      cleanups.push(() => fs.unmount(mnt));
      const bytes = Buffer.from('hello through qcow2, FUSE and a loop device');
      const fd = openSync(join(mnt, 'f'), 'w');
      writeSync(fd, bytes);
      closeSync(fd);
      await fs.unmount(mnt);
      // Remount to read from the device, not the page cache of the first mount.
      await fs.mount(device, mnt, { fsType: 'ext4', flags: [], readOnly: true });
      const back = Buffer.alloc(bytes.length);
      const rfd = openSync(join(mnt, 'f'), 'r');
      readSync(rfd, back);
      closeSync(rfd);
      expect(back.toString()).toBe(bytes.toString());
      await fs.unmount(mnt);
      await loops.detach(device);

      await exportsA.stop(h);
      expect(await mounted(h.exportFile)).toBe(false);
      expect(readdirSync(join(dir, 'state'))).toEqual([]);
      expect(await exportsA.isAlive(h)).toBe(false);
      await exportsA.stop(h); // idempotent
      expect(planeRunning()).toBe(true); // the data plane outlives its exports
    });

    it('keeps every byte written through the loop device, in the I/O mode the export allows', async () => {
      const dir = share();
      const image = qcow2(dir, 32n * MiB);
      const h = await start(image, join(dir, 'state'));
      const device = await attach(h);
      const pattern = join(dir, 'pattern.bin');
      execFileSync('dd', ['if=/dev/urandom', `of=${pattern}`, 'bs=1M', 'count=16', 'status=none']);
      execFileSync('dd', [`if=${pattern}`, `of=${device}`, 'bs=1M', 'oflag=direct', 'status=none']);
      execFileSync('dd', [`if=${pattern}`, `of=${device}`, 'bs=4k', 'seek=4096', 'conv=fsync', 'status=none']);
      await loops.detach(device);
      await exportsA.stop(h);
      // Read back from the qcow2 itself: what qemu stored, not what any cache holds.
      const raw = join(dir, 'back.raw');
      execFileSync('qemu-img', ['convert', '-f', 'qcow2', '-O', 'raw', image, raw]);
      execFileSync('cmp', ['-n', String(16n * MiB), pattern, raw]);
      execFileSync('cmp', ['-n', String(16n * MiB), '-i', `0:${16n * MiB}`, pattern, raw]);
    });

    it('grows the image over QMP and the loop device follows after refreshCapacity', async () => {
      const dir = share();
      const image = qcow2(dir, 32n * MiB);
      const h = await start(image, join(dir, 'state'));
      const device = await attach(h);
      await exportsA.resize(h, 96n * MiB);
      await loops.refreshCapacity(device);
      expect(await loops.size(device)).toBe(96n * MiB);
      await expect(exportsA.resize(h, 16n * MiB)).rejects.toMatchObject({ kind: 'outOfRange' });
      await loops.detach(device);
      await exportsA.stop(h);
      const info = JSON.parse(execFileSync('qemu-img', ['info', '--output=json', image], { encoding: 'utf8' })) as { 'virtual-size': number };
      expect(info['virtual-size']).toBe(Number(96n * MiB));
    });

    it('serves two volumes from one daemon; stopping one leaves the other serving', async () => {
      const dir = share();
      const a = await start(qcow2(dir, 32n * MiB, 'a.qcow2'), join(dir, 'a'), false, 'qcow2', 1);
      const b = await start(qcow2(dir, 32n * MiB, 'b.qcow2'), join(dir, 'b'), false, 'qcow2', 2);
      expect(a.qmpSocket).toBe(b.qmpSocket);
      const device = await attach(b);
      await exportsA.stop(a);
      expect(await exportsA.isAlive(a)).toBe(false);
      expect(await exportsA.isAlive(b)).toBe(true);
      execFileSync('dd', ['if=/dev/urandom', `of=${device}`, 'bs=1M', 'count=4', 'oflag=direct', 'status=none']);
      expect(await exportsA.top(b)).toBe(`t${tag(2)}`);
    });

    it('stops from a JSON copy of the handle in a fresh adapter (plugin restart), idempotently', async () => {
      const dir = share();
      const h = await start(qcow2(dir, 32n * MiB), join(dir, 'state'));
      const copy = JSON.parse(JSON.stringify(h)) as ExportHandle;
      const restarted = fresh();
      expect(await restarted.isAlive(copy)).toBe(true);
      await restarted.stop(copy);
      await restarted.stop(copy);
      expect(await mounted(h.exportFile)).toBe(false);
      expect(readdirSync(join(dir, 'state'))).toEqual([]);
    });

    it('returns the running export when started again with the same image, refuses another image there', async () => {
      const dir = share();
      const image = qcow2(dir, 32n * MiB);
      const h = await start(image, join(dir, 'state'));
      expect(await fresh().start(image, options(join(dir, 'state')))).toEqual(h);
      const other = qcow2(dir, 32n * MiB, 'other.qcow2');
      await expect(exportsA.start(other, options(join(dir, 'state')))).rejects.toMatchObject({ kind: 'precondition' });
      expect(await exportsA.isAlive(h)).toBe(true);
    });

    it('after the daemon is killed: not alive, stop unmounts the stale FUSE mount under a loop device, and the next start brings a new daemon', async () => {
      const dir = share();
      const image = qcow2(dir, 32n * MiB);
      const h = await start(image, join(dir, 'state'));
      const device = await attach(h);
      const pid = planePid();
      process.kill(pid, 'SIGKILL');
      await untilExited(pid);
      expect(await exportsA.isAlive(h)).toBe(false);
      expect(await mounted(h.exportFile)).toBe(true); // stale: "Transport endpoint is not connected"
      await fresh().stop(h);
      expect(await mounted(h.exportFile)).toBe(false);
      expect(readdirSync(join(dir, 'state'))).toEqual([]);
      expect(await loops.detach(device)).toBe('detached');
      const again = await start(image, join(dir, 'state'));
      expect(await exportsA.isAlive(again)).toBe(true);
      expect(planePid()).not.toBe(pid);
    });

    it('stops without hanging even when a loop device is still attached to the export', async () => {
      const dir = share();
      const h = await start(qcow2(dir, 32n * MiB), join(dir, 'state'));
      const device = await attach(h);
      await exportsA.stop(h);
      expect(await mounted(h.exportFile)).toBe(false);
      expect(readdirSync(join(dir, 'state'))).toEqual([]);
      expect(await loops.detach(device)).toBe('detached');
    });

    it('refuses a second writer, and a reader beside a writer, with the image lock as precondition', async () => {
      const dir = share();
      const image = qcow2(dir, 32n * MiB);
      await start(image, join(dir, 'a'));
      for (const readOnly of [false, true]) {
        const err = await exportsA.start(image, options(join(dir, 'b'), readOnly, 'qcow2', 2)).catch((e: unknown) => e);
        expect(err).toBeInstanceOf(DriverError);
        expect(err).toMatchObject({ kind: 'precondition', reason: 'imageLocked' });
        expect((err as Error).message).toContain(image);
        expect((err as Error).message).toMatch(/in use by another process.*lock/);
        expect(readdirSync(join(dir, 'b'))).toEqual([]);
        expect(await mounted(join(dir, 'b', 'export.raw'))).toBe(false);
      }
    });

    it('exports read-only to several readers (buffered loop), which cannot be resized', async () => {
      const dir = share();
      const image = qcow2(dir, 32n * MiB);
      const r1 = await start(image, join(dir, 'r1'), true, 'qcow2', 1);
      const r2 = await start(image, join(dir, 'r2'), true, 'qcow2', 2);
      expect(r2.loopDirectIo).toBe(false);
      const device = await attach(r2, true);
      expect(await loops.size(device)).toBe(32n * MiB);
      await expect(exportsA.resize(r1, 64n * MiB)).rejects.toMatchObject({ kind: 'precondition' });
      await expect(exportsA.start(image, options(join(dir, 'w'), false, 'qcow2', 3))).rejects.toMatchObject({
        kind: 'precondition',
        reason: 'imageLocked',
      });
    });

    it('exports a raw image, and falls back to buffered I/O on a filesystem without O_DIRECT', async () => {
      const dir = share('ramfs');
      const image = join(dir, 'disk.raw');
      execFileSync('qemu-img', ['create', '-q', '-f', 'raw', image, String(16n * MiB)]);
      const h = await start(image, join(dir, 'state'), false, 'raw');
      expect(h).toMatchObject({ directIo: false, aio: 'io_uring', format: 'raw' });
      const device = await attach(h);
      expect(await loops.size(device)).toBe(16n * MiB);
      await exportsA.resize(h, 24n * MiB);
      await loops.refreshCapacity(device);
      expect(await loops.size(device)).toBe(24n * MiB);
    });
  },
);

describe.skipIf(rootOnlyReason() !== undefined)('the data plane', () => {
  const run = makeRunner(silent, { qemu: findQemu(undefined) });

  it('in external mode is not started by the plugin: UNAVAILABLE naming the socket', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'fdtest-dp-'));
    const exportsX = makeQemuExports(new DataPlane(dir, 'external', run, silent), run, silent);
    await expect(
      exportsX.start(join(dir, 'none.qcow2'), { format: 'qcow2', readOnly: false, stateDir: join(dir, 's'), tag: tag(1) }),
    ).rejects.toMatchObject({
      kind: 'unavailable',
      message: expect.stringContaining(join(dir, 'qmp.sock')),
    });
    expect(existsSync(join(dir, 'qsd.pid'))).toBe(false);
    rmSync(dir, { recursive: true, force: true });
  });

  it('refuses a directory whose socket path would not fit a unix socket', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'fdtest-dp-'));
    const long = join(dir, 'x'.repeat(120));
    const exportsL = makeQemuExports(new DataPlane(long, 'managed', run, silent), run, silent);
    await expect(
      exportsL.start(join(dir, 'none.qcow2'), { format: 'qcow2', readOnly: false, stateDir: join(dir, 's'), tag: tag(1) }),
    ).rejects.toMatchObject({ kind: 'internal' });
    rmSync(dir, { recursive: true, force: true });
  });
});
