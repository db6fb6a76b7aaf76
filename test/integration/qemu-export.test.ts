/**
 * qcow2 through qemu-storage-daemon's FUSE export and a loop device, with the
 * real daemon: data round trip, growth over QMP, stop from a fresh process,
 * a crashed daemon, image locks, read-only exports and the O_DIRECT fallback.
 */
import { execFileSync } from 'node:child_process';
import { closeSync, mkdirSync, mkdtempSync, openSync, readdirSync, readSync, rmSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { DriverError } from '../../src/domain/errors.js';
import { makeRunner } from '../../src/system/command.js';
import { makeFilesystems } from '../../src/system/filesystems.js';
import { makeLoopDevices } from '../../src/system/loop-devices.js';
import { readMountInfo, mountAt } from '../../src/system/mountinfo.js';
import { makeQemuExports, type ExportHandle, type QemuExports } from '../../src/system/qemu-export.js';
import { rootOnlyReason } from '../helpers/root.js';
import { makeScratch, type Scratch } from '../helpers/scratch.js';
import { untilExited } from '../helpers/wait.js';

const MiB = 1024n * 1024n;
const fresh = (): QemuExports => makeQemuExports(makeRunner(pino({ level: 'silent' })), pino({ level: 'silent' }));

function qemuRunning(pidFile: string): boolean {
  try {
    return execFileSync('pgrep', ['-f', pidFile], { encoding: 'utf8' }).trim() !== '';
  } catch {
    return false; // pgrep exits 1 when nothing matches
  }
}

const mounted = async (path: string): Promise<boolean> => mountAt(await readMountInfo(), path) !== undefined;

/** ramfs has no O_DIRECT (tmpfs has it since Linux 6.6). */
function makeRamfs(): Scratch {
  const base = mkdtempSync(join(tmpdir(), 'fdtest-'));
  const path = join(base, 'mnt');
  mkdirSync(path);
  execFileSync('mount', ['-t', 'ramfs', 'fdtest-ramfs', path]);
  return { path, cleanup: () => (execFileSync('umount', [path]), rmSync(base, { recursive: true, force: true })) };
}

// rootOnlyReason() prints why when the suite is skipped.
describe.skipIf(rootOnlyReason() !== undefined)('qemu-storage-daemon FUSE export (real daemon)', () => {
  const exportsA = fresh();
  const run = makeRunner(pino({ level: 'silent' }));
  const loops = makeLoopDevices(run);
  const fs = makeFilesystems(run);
  const cleanups: (() => unknown)[] = [];

  afterEach(async () => {
    for (const c of cleanups.splice(0).reverse()) await c();
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

  async function start(image: string, stateDir: string, readOnly = false, format: 'qcow2' | 'raw' = 'qcow2'): Promise<ExportHandle> {
    const h = await exportsA.start(image, { format, readOnly, stateDir });
    cleanups.push(() => exportsA.stop(h));
    return h;
  }

  async function attach(file: string, readOnly = false): Promise<string> {
    const dev = await loops.attach(file, { readOnly, directIo: true });
    cleanups.push(async () => {
      for (const d of await loops.findByFile(file)) await loops.detach(d.device);
    });
    // Loop direct I/O over FUSE corrupted writes here; the adapter must have refused it.
    expect(dev.directIo).toBe(false);
    return dev.device;
  }

  it('exports a qcow2 image that takes a filesystem, data and a clean stop', async () => {
    const dir = share();
    const h = await start(qcow2(dir, 64n * MiB), join(dir, 'state'));
    expect(h).toMatchObject({ aio: 'io_uring', directIo: true, readOnly: false, format: 'qcow2' });
    expect(await exportsA.isAlive(h)).toBe(true);
    const device = await attach(h.exportFile);
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
    expect(qemuRunning(h.pidFile)).toBe(false);
    expect(await mounted(h.exportFile)).toBe(false);
    expect(readdirSync(join(dir, 'state'))).toEqual([]);
    expect(await exportsA.isAlive(h)).toBe(false);
    await exportsA.stop(h); // idempotent
  });

  it('keeps every byte written through the loop device (no direct I/O over FUSE)', async () => {
    const dir = share();
    const image = qcow2(dir, 32n * MiB);
    const h = await start(image, join(dir, 'state'));
    const device = await attach(h.exportFile);
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
    const device = await attach(h.exportFile);
    await exportsA.resize(h, 96n * MiB);
    await loops.refreshCapacity(device);
    expect(await loops.size(device)).toBe(96n * MiB);
    await expect(exportsA.resize(h, 16n * MiB)).rejects.toMatchObject({ kind: 'outOfRange' });
    await loops.detach(device);
    await exportsA.stop(h);
    const info = JSON.parse(execFileSync('qemu-img', ['info', '--output=json', image], { encoding: 'utf8' })) as { 'virtual-size': number };
    expect(info['virtual-size']).toBe(Number(96n * MiB));
  });

  it('stops from a JSON copy of the handle in a fresh adapter (plugin restart), idempotently', async () => {
    const dir = share();
    const h = await start(qcow2(dir, 32n * MiB), join(dir, 'state'));
    const copy = JSON.parse(JSON.stringify(h)) as ExportHandle;
    const restarted = fresh();
    expect(await restarted.isAlive(copy)).toBe(true);
    await restarted.stop(copy);
    await restarted.stop(copy);
    expect(qemuRunning(h.pidFile)).toBe(false);
    expect(await mounted(h.exportFile)).toBe(false);
    expect(readdirSync(join(dir, 'state'))).toEqual([]);
  });

  it('returns the running export when started again with the same image, refuses another image there', async () => {
    const dir = share();
    const image = qcow2(dir, 32n * MiB);
    const h = await start(image, join(dir, 'state'));
    expect(await fresh().start(image, { format: 'qcow2', readOnly: false, stateDir: join(dir, 'state') })).toEqual(h);
    const other = qcow2(dir, 32n * MiB, 'other.qcow2');
    await expect(exportsA.start(other, { format: 'qcow2', readOnly: false, stateDir: join(dir, 'state') })).rejects.toMatchObject({
      kind: 'precondition',
    });
    expect(await exportsA.isAlive(h)).toBe(true);
  });

  it('after a SIGKILL: not alive, and stop unmounts the stale FUSE mount even with a loop device on it', async () => {
    const dir = share();
    const h = await start(qcow2(dir, 32n * MiB), join(dir, 'state'));
    const device = await attach(h.exportFile);
    process.kill(h.pid, 'SIGKILL');
    await untilExited(h.pid);
    expect(await exportsA.isAlive(h)).toBe(false);
    expect(await mounted(h.exportFile)).toBe(true); // stale: "Transport endpoint is not connected"
    await fresh().stop(h);
    expect(await mounted(h.exportFile)).toBe(false);
    expect(readdirSync(join(dir, 'state'))).toEqual([]);
    expect(await loops.detach(device)).toBe('detached');
  });

  it('stops without hanging even when a loop device is still attached to the export', async () => {
    const dir = share();
    const h = await start(qcow2(dir, 32n * MiB), join(dir, 'state'));
    const device = await attach(h.exportFile);
    await exportsA.stop(h);
    expect(qemuRunning(h.pidFile)).toBe(false);
    expect(await mounted(h.exportFile)).toBe(false);
    expect(readdirSync(join(dir, 'state'))).toEqual([]);
    expect(await loops.detach(device)).toBe('detached');
  });

  it('stops with signals when QMP is unreachable, and still cleans the mount', async () => {
    const dir = share();
    const h = await start(qcow2(dir, 32n * MiB), join(dir, 'state'));
    rmSync(h.qmpSocket); // the daemon keeps listening on an inode nobody can reach
    await exportsA.stop(h);
    expect(qemuRunning(h.pidFile)).toBe(false);
    expect(await mounted(h.exportFile)).toBe(false);
    expect(readdirSync(join(dir, 'state'))).toEqual([]);
  });

  it('refuses a second writer, and a reader beside a writer, with the image lock as precondition', async () => {
    const dir = share();
    const image = qcow2(dir, 32n * MiB);
    await start(image, join(dir, 'a'));
    for (const readOnly of [false, true]) {
      const err = await exportsA.start(image, { format: 'qcow2', readOnly, stateDir: join(dir, 'b') }).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(DriverError);
      expect(err).toMatchObject({ kind: 'precondition' });
      expect((err as Error).message).toContain(image);
      expect((err as Error).message).toMatch(/in use by another process.*lock/);
      expect(readdirSync(join(dir, 'b'))).toEqual([]);
      expect(await mounted(join(dir, 'b', 'export.raw'))).toBe(false);
    }
  });

  it('exports read-only to several readers, which cannot be resized', async () => {
    const dir = share();
    const image = qcow2(dir, 32n * MiB);
    const r1 = await start(image, join(dir, 'r1'), true);
    const r2 = await start(image, join(dir, 'r2'), true);
    const device = await attach(r2.exportFile, true);
    expect(await loops.size(device)).toBe(32n * MiB);
    await expect(exportsA.resize(r1, 64n * MiB)).rejects.toMatchObject({ kind: 'precondition' });
    await expect(exportsA.start(image, { format: 'qcow2', readOnly: false, stateDir: join(dir, 'w') })).rejects.toMatchObject({
      kind: 'precondition',
    });
  });

  it('exports a raw image, and falls back to buffered I/O on a filesystem without O_DIRECT', async () => {
    const dir = share('ramfs');
    const image = join(dir, 'disk.raw');
    execFileSync('qemu-img', ['create', '-q', '-f', 'raw', image, String(16n * MiB)]);
    const h = await start(image, join(dir, 'state'), false, 'raw');
    expect(h).toMatchObject({ directIo: false, aio: 'io_uring', format: 'raw' });
    const device = await attach(h.exportFile);
    expect(await loops.size(device)).toBe(16n * MiB);
    await exportsA.resize(h, 24n * MiB);
    await loops.refreshCapacity(device);
    expect(await loops.size(device)).toBe(24n * MiB);
  });

  it('refuses a state dir whose socket path would not fit a unix socket', async () => {
    const dir = share();
    const long = join(dir, 'x'.repeat(120));
    await expect(exportsA.start(qcow2(dir, 32n * MiB), { format: 'qcow2', readOnly: false, stateDir: long })).rejects.toMatchObject({
      kind: 'internal',
    });
  });
});
