/**
 * The filesystem adapter with real tools on loop devices: what probe calls
 * blank, a filesystem or something else; format only over blank; mount and
 * idempotent unmount (also of a dead FUSE mount); online growth; usage.
 */
import { execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdirSync, readFileSync, symlinkSync, truncateSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import pino from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { makeRunner } from '../../src/system/command.js';
import { makeFilesystems } from '../../src/system/filesystems.js';
import { makeLoopDevices } from '../../src/system/loop-devices.js';
import { DataPlane } from '../../src/system/data-plane.js';
import { makeQemuExports } from '../../src/system/qemu-export.js';
import { rootOnlyReason } from '../helpers/root.js';
import { makeScratch } from '../helpers/scratch.js';
import { untilExited } from '../helpers/wait.js';

const MiB = 1024 * 1024;
const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');
const CAP_SYS_RESOURCE = 24n;
const capEff = /CapEff:\s*([0-9a-f]+)/.exec(readFileSync('/proc/self/status', 'utf8'))?.[1] ?? '0';
const hasCapSysResource = ((BigInt(`0x${capEff}`) >> CAP_SYS_RESOURCE) & 1n) === 1n;

// rootOnlyReason() prints why when the suite is skipped.
describe.skipIf(rootOnlyReason() !== undefined)('filesystems (real tools)', () => {
  const silent = pino({ level: 'silent' });
  const run = makeRunner(silent);
  const fs = makeFilesystems(run);
  const loops = makeLoopDevices(run);
  const cleanups: (() => unknown)[] = [];

  afterEach(async () => {
    for (const c of cleanups.splice(0).reverse()) await c();
  });

  function dir(): string {
    const s = makeScratch('tmpfs', 128);
    cleanups.push(() => s.cleanup());
    return s.path;
  }

  /** A loop device over a sparse file (xfs wants at least 300 MiB). */
  async function device(base: string, sizeMiB = 320, name = 'disk.raw'): Promise<{ file: string; device: string }> {
    const file = join(base, name);
    writeFileSync(file, '');
    truncateSync(file, sizeMiB * MiB);
    const dev = await loops.attach(file, { readOnly: false, directIo: true });
    cleanups.push(() => loops.detach(dev.device));
    return { file, device: dev.device };
  }

  /** Back to a fresh image's zeros (wipefs would leave the old metadata, which is not blank). */
  function zero(d: string): void {
    execFileSync('blkdiscard', ['-f', d], { stdio: 'ignore' });
  }

  function mountPoint(base: string, name = 'mnt'): string {
    const path = join(base, name);
    mkdirSync(path);
    cleanups.push(() => fs.unmount(path));
    return path;
  }

  it('probes blank, ext4, xfs, swap and a device with two signatures', async () => {
    const base = dir();
    const { device: d } = await device(base);
    expect(await fs.probe(d)).toEqual({ kind: 'blank' });
    await fs.formatIfBlank(d, 'ext4');
    expect(await fs.probe(d)).toEqual({ kind: 'filesystem', fsType: 'ext4' });
    zero(d);
    await fs.formatIfBlank(d, 'xfs');
    expect(await fs.probe(d)).toEqual({ kind: 'filesystem', fsType: 'xfs' });
    zero(d);
    execFileSync('mkswap', ['-q', d]);
    expect(await fs.probe(d)).toEqual({ kind: 'other', description: 'swap (other)' });
    // An xfs superblock at 0 and an ext4 one at 1 KiB: blkid calls it ambivalent.
    zero(d);
    execFileSync('mkfs.xfs', ['-q', '-f', d]);
    const e4 = join(base, 'e4.img');
    writeFileSync(e4, '');
    truncateSync(e4, 8 * MiB);
    execFileSync('mkfs.ext4', ['-q', '-F', e4]);
    execFileSync('dd', [`if=${e4}`, `of=${d}`, 'bs=1024', 'skip=1', 'seek=1', 'count=1', 'conv=notrunc', 'status=none']);
    const probe = await fs.probe(d);
    expect(probe.kind).toBe('other');
    expect(probe.kind === 'other' && probe.description).toMatch(/several signatures: .*xfs at 0x0.*ext4 at 0x438/);
  });

  it('formats nothing that is not blank', async () => {
    const { device: d } = await device(dir());
    execFileSync('mkswap', ['-q', d]);
    expect(await fs.formatIfBlank(d, 'ext4')).toEqual({ kind: 'other', description: expect.stringMatching(/swap/) });
    expect(await fs.probe(d)).toEqual({ kind: 'other', description: 'swap (other)' });
    zero(d);
    expect(await fs.formatIfBlank(d, 'xfs')).toEqual({ kind: 'blank' });
    expect(await fs.formatIfBlank(d, 'ext4')).toEqual({ kind: 'filesystem', fsType: 'xfs' });
    expect(await fs.probe(d)).toEqual({ kind: 'filesystem', fsType: 'xfs' });
  });

  it('calls data without a signature other and never formats it', async () => {
    const base = dir();
    const { file, device: d } = await device(base, 16);
    writeFileSync(file, randomBytes(16 * MiB));
    const before = sha(readFileSync(file));
    expect(await fs.probe(d)).toEqual({ kind: 'other', description: 'data without a signature blkid knows' });
    expect(await fs.formatIfBlank(d, 'ext4')).toMatchObject({ kind: 'other' });
    expect(sha(readFileSync(file))).toBe(before);
  });

  it('refuses to call a device blank, or format it, when its reads fail', async () => {
    const base = dir();
    const image = join(base, 'img');
    writeFileSync(image, randomBytes(8 * MiB));
    const dev = await failingDevice(base, image);
    await expect(fs.formatIfBlank(dev, 'ext4')).rejects.toMatchObject({
      kind: 'internal',
      message: expect.stringMatching(new RegExp(`${dev}.*(I/O|EIO)`)),
    });
    await expect(fs.probe(dev)).rejects.toMatchObject({ kind: 'internal' });
  });

  /** A loop device over a qemu FUSE export whose reads all fail with EIO (blkdebug). */
  async function failingDevice(base: string, image: string): Promise<string> {
    const exp = join(base, 'exp.raw');
    const pidFile = join(base, 'qsd.pid');
    writeFileSync(exp, '');
    execFileSync('qemu-storage-daemon', [
      '--blockdev',
      `driver=file,node-name=file0,filename=${image}`,
      '--blockdev',
      'driver=blkdebug,node-name=dbg0,image=file0,inject-error.0.event=read_aio,inject-error.0.errno=5',
      '--blockdev',
      'driver=raw,node-name=fmt0,file=dbg0',
      '--export',
      `type=fuse,id=e0,node-name=fmt0,mountpoint=${exp},writable=off`,
      '--pidfile',
      pidFile,
      '--daemonize',
    ]);
    const pid = Number(readFileSync(pidFile, 'utf8').trim());
    cleanups.push(async () => {
      process.kill(pid, 'SIGKILL');
      // Gone, or a zombie nobody reaps (the daemon's parent is whatever PID 1 is here).
      await untilExited(pid);
      await fs.unmount(exp);
    });
    const dev = await loops.attach(exp, { readOnly: true, directIo: false });
    cleanups.push(() => loops.detach(dev.device));
    return dev.device;
  }

  it('formats, mounts, reports usage and unmounts idempotently', async () => {
    const base = dir();
    const { device: d } = await device(base, 64);
    await fs.formatIfBlank(d, 'ext4');
    const mnt = mountPoint(base);
    expect(await fs.isMountPoint(mnt)).toBe(false);
    await fs.mount(d, mnt, { fsType: 'ext4', flags: ['noatime'], readOnly: false });
    expect(await fs.isMountPoint(mnt)).toBe(true);
    writeFileSync(join(mnt, 'f'), Buffer.alloc(4 * MiB, 1));
    const u = await fs.usage(mnt);
    expect(u.totalBytes).toBeGreaterThan(50n * BigInt(MiB));
    expect(u.usedBytes).toBeGreaterThanOrEqual(4n * BigInt(MiB));
    expect(u.availableBytes).toBeLessThan(u.totalBytes);
    expect(u.usedInodes).toBeGreaterThan(0n);
    expect(u.totalInodes).toBe(u.usedInodes + u.availableInodes);
    await fs.unmount(mnt);
    expect(await fs.isMountPoint(mnt)).toBe(false);
    await fs.unmount(mnt);
    await fs.unmount(join(base, 'never', 'existed'));
    expect(await fs.isMountPoint(join(base, 'never', 'existed'))).toBe(false);
  });

  it('answers isMountPoint through symlinks, and unmounts stacked mounts completely', async () => {
    const base = dir();
    const mnt = mountPoint(base);
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=1m', 'fdtest-a', mnt]);
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=1m', 'fdtest-b', mnt]);
    symlinkSync(mnt, join(base, 'link'));
    expect(await fs.isMountPoint(join(base, 'link'))).toBe(true);
    expect(await fs.isMountPoint(base + '/')).toBe(true); // the scratch itself
    await fs.unmount(join(base, 'link'));
    expect(await fs.isMountPoint(mnt)).toBe(false);
  });

  it('bind-mounts read-only with flags', async () => {
    const base = dir();
    const src = join(base, 'src');
    mkdirSync(src);
    writeFileSync(join(src, 'f'), 'x');
    const target = mountPoint(base, 'target');
    await fs.mount(src, target, { bind: true, readOnly: true, flags: ['nosuid'] });
    expect(() => writeFileSync(join(target, 'g'), 'y')).toThrow(/EROFS/);
    const line = execFileSync('findmnt', ['-n', '-o', 'OPTIONS', target], { encoding: 'utf8' });
    expect(line).toMatch(/\bro\b.*nosuid|nosuid.*\bro\b/);
  });

  it('unmounts a dead FUSE mount, lazily when a loop device still holds it', async () => {
    const base = dir();
    const image = join(base, 'disk.qcow2');
    execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', image, '16M']);
    const plane = new DataPlane(join(base, 'dp'), 'managed', run, silent);
    const exportsA = makeQemuExports(plane, run, silent);
    const h = await exportsA.start(image, { format: 'qcow2', readOnly: false, stateDir: join(base, 'state'), tag: '00000000000000ff' });
    cleanups.push(() => exportsA.stop(h));
    const dev = await loops.attach(h.exportFile, { readOnly: false, directIo: false });
    cleanups.push(() => loops.detach(dev.device));
    const pid = Number(readFileSync(join(base, 'dp', 'qsd.pid'), 'utf8'));
    process.kill(pid, 'SIGKILL');
    await untilExited(pid);
    expect(await exportsA.isAlive(h)).toBe(false);
    expect(await fs.isMountPoint(h.exportFile)).toBe(true);
    await fs.unmount(h.exportFile); // busy (the loop) and stale (ENOTCONN): umount -l
    expect(await fs.isMountPoint(h.exportFile)).toBe(false);
  });

  // Online ext4 growth is an ioctl that needs CAP_SYS_RESOURCE; some sandboxes drop it even for root.
  it.skipIf(!hasCapSysResource)('grows a mounted ext4 filesystem online', () => growOnline('ext4'));
  it('grows a mounted xfs filesystem online', () => growOnline('xfs'));

  it.skipIf(hasCapSysResource)('says why online ext4 growth fails without CAP_SYS_RESOURCE', async () => {
    process.stderr.write('this process lacks CAP_SYS_RESOURCE: online ext4 growth cannot work here\n');
    await expect(growOnline('ext4')).rejects.toMatchObject({ kind: 'internal', message: expect.stringMatching(/CAP_SYS_RESOURCE/) });
  });

  async function growOnline(fsType: 'ext4' | 'xfs'): Promise<void> {
    const base = dir();
    const { file, device: d } = await device(base, 320);
    await fs.formatIfBlank(d, fsType);
    const mnt = mountPoint(base);
    await fs.mount(d, mnt, { fsType, flags: [], readOnly: false });
    const before = (await fs.usage(mnt)).totalBytes;
    truncateSync(file, 640 * MiB);
    await loops.refreshCapacity(d);
    await fs.grow(fsType, d, mnt);
    const after = (await fs.usage(mnt)).totalBytes;
    expect(after).toBeGreaterThan(before + 250n * BigInt(MiB));
  }
});
