/** The daemon's command line and start()'s reading of qemu-storage-daemon 7.2 errors (captured). */
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { CommandFailed, type Runner } from '../../src/system/command.js';
import { daemonArgs, makeQemuExports } from '../../src/system/qemu-export.js';

const paths = { exportFile: '/s/export.raw', qmpSocket: '/s/qmp.sock', pidFile: '/s/qsd.pid', intent: '/s/export.json' };

describe('daemon command line', () => {
  it('exports a qcow2 for a writer with io_uring, O_DIRECT, locking and discard', () => {
    expect(daemonArgs('/share/v,1/disk.qcow2', { format: 'qcow2', readOnly: false, stateDir: '/s' }, paths, 'io_uring', true)).toEqual([
      'qemu-storage-daemon',
      '--blockdev', 'driver=file,node-name=file0,filename=/share/v,,1/disk.qcow2,aio=io_uring,cache.direct=on,locking=on,discard=unmap',
      '--blockdev', 'driver=qcow2,node-name=fmt0,file=file0,discard=unmap',
      '--chardev', 'socket,id=qmp0,path=/s/qmp.sock,server=on,wait=off',
      '--monitor', 'chardev=qmp0',
      '--export', 'type=fuse,id=export0,node-name=fmt0,mountpoint=/s/export.raw,writable=on',
      '--pidfile', '/s/qsd.pid',
      '--daemonize',
    ]);
  });

  it('opens a backing chain as named read-only nodes, bottom first, under the image', () => {
    const chain = [
      { node: 'sb', image: '/share/filedriver/snapshots/b/disk.qcow2', format: 'qcow2' as const },
      { node: 'sa', image: '/share/filedriver/snapshots/a/disk.raw', format: 'raw' as const },
    ];
    const argv = daemonArgs('/share/filedriver/volumes/v/disk.qcow2', { format: 'qcow2', readOnly: false, stateDir: '/s', chain }, paths, 'io_uring', true);
    const devs = argv.flatMap((a, i) => (argv[i - 1] === '--blockdev' ? [a] : []));
    expect(devs.slice(0, 2).map((d) => JSON.parse(d))).toEqual([
      { driver: 'raw', 'node-name': 'sa', 'read-only': true, file: { driver: 'file', filename: '/share/filedriver/snapshots/a/disk.raw', aio: 'io_uring', cache: { direct: true }, locking: 'on' } },
      { driver: 'qcow2', 'node-name': 'sb', 'read-only': true, backing: 'sa', file: { driver: 'file', filename: '/share/filedriver/snapshots/b/disk.qcow2', aio: 'io_uring', cache: { direct: true }, locking: 'on' } },
    ]);
    expect(devs[3]).toBe('driver=qcow2,node-name=fmt0,file=file0,backing=sb,discard=unmap');
  });

  it('exports a raw image read-only straight from the file node', () => {
    const argv = daemonArgs('/share/disk.raw', { format: 'raw', readOnly: true, stateDir: '/s' }, paths, 'threads', false);
    expect(argv.filter((a) => a.startsWith('driver='))).toEqual([
      'driver=file,node-name=file0,filename=/share/disk.raw,aio=threads,cache.direct=off,locking=on,read-only=on',
    ]);
    expect(argv).toContain('type=fuse,id=export0,node-name=file0,mountpoint=/s/export.raw,writable=off');
    expect(argv.join(' ')).not.toMatch(/force-share/);
  });
});

// Captured from qemu-storage-daemon 7.2 (a ramfs image; a second writer; a reader beside a writer).
const NO_O_DIRECT =
  "qemu-storage-daemon: --blockdev driver=file,node-name=file0,filename=/tmp/fdtest-x/r/e.qcow2,aio=io_uring,cache.direct=on: Could not open '/tmp/fdtest-x/r/e.qcow2': filesystem does not support O_DIRECT";
const WRITE_LOCK =
  'qemu-storage-daemon: --blockdev driver=qcow2,node-name=fmt0,file=file0: Failed to get "write" lock\nIs another process using the image [/tmp/fdtest-x/x/d.qcow2]?';
const SHARED_LOCK =
  'qemu-storage-daemon: --blockdev driver=qcow2,node-name=fmt0,file=file0,read-only=on: Failed to get shared "write" lock\nIs another process using the image [/tmp/fdtest-x/x/d.qcow2]?';
// Not reproducible here (io_uring works); the wording is qemu 7.2's file-posix.c + io_uring.c.
const NO_IO_URING =
  'qemu-storage-daemon: --blockdev driver=file,node-name=file0,filename=/x: Unable to use io_uring: failed to init linux io_uring ring: Operation not permitted';

describe('start', () => {
  const dirs: string[] = [];
  afterEach(() => {
    for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
  });

  function failing(...stderrs: string[]): { run: Runner; calls: string[][] } {
    const calls: string[][] = [];
    return {
      calls,
      run: async (argv) => {
        calls.push([...argv]);
        throw new CommandFailed(argv, 1, stderrs[calls.length - 1] ?? 'unexpected call');
      },
    };
  }

  async function startWith(run: Runner, readOnly = false): Promise<{ error: unknown; stateDir: string }> {
    const stateDir = mkdtempSync(join(tmpdir(), 'fdtest-unit-'));
    dirs.push(stateDir);
    const exportsA = makeQemuExports(run, pino({ level: 'silent' }));
    const error = await exportsA.start(join(stateDir, 'disk.qcow2'), { format: 'qcow2', readOnly, stateDir }).catch((e: unknown) => e);
    return { error, stateDir };
  }

  it('drops O_DIRECT, then io_uring, as qemu reports them unsupported; a lock conflict is a precondition', async () => {
    const { run, calls } = failing(NO_O_DIRECT, NO_IO_URING, WRITE_LOCK);
    const { error, stateDir } = await startWith(run);
    const options = calls.map((c) => /aio=\w+,cache\.direct=\w+/.exec(c.join(' '))?.[0]);
    expect(options).toEqual(['aio=io_uring,cache.direct=on', 'aio=io_uring,cache.direct=off', 'aio=threads,cache.direct=off']);
    expect(error).toMatchObject({ kind: 'precondition', message: expect.stringMatching(/disk\.qcow2 is in use by another process/) });
    expect((error as Error).message).toContain('Is another process using the image');
    expect(readdirSync(stateDir)).toEqual([]); // a failed start leaves nothing behind
  });

  it('reads a reader blocked by a writer as a precondition too', async () => {
    const { error } = await startWith(failing(SHARED_LOCK).run, true);
    expect(error).toMatchObject({ kind: 'precondition' });
  });

  it('passes any other failure on without retrying', async () => {
    const { run, calls } = failing("qemu-storage-daemon: Could not open '/x/disk.qcow2': No such file or directory");
    const { error } = await startWith(run);
    expect(error).toBeInstanceOf(CommandFailed);
    expect(calls).toHaveLength(1);
  });
});
