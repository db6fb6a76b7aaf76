/** Parsing of losetup's JSON and the attach/detach decisions, against captured util-linux 2.38 output. */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { CommandFailed, type RunResult, type Runner } from '../../src/system/command.js';
import { makeLoopDevices, parseLosetupJson } from '../../src/system/loop-devices.js';

// `losetup --list --json` (util-linux 2.38.1, Linux 6.18), one file deleted while attached.
const LIST = `{
   "loopdevices": [
      {
         "name": "/dev/loop1",
         "sizelimit": 0,
         "offset": 0,
         "autoclear": false,
         "ro": false,
         "back-file": "/tmp/fdtest-explore-Uav0/x/a.raw",
         "dio": true,
         "log-sec": 512
      },{
         "name": "/dev/loop2",
         "sizelimit": 0,
         "offset": 0,
         "autoclear": false,
         "ro": true,
         "back-file": "/tmp/fdtest-explore-Uav0/x/sp ace.raw (deleted)",
         "dio": false,
         "log-sec": 512
      },{
         "name": "/dev/loop0",
         "sizelimit": 0,
         "offset": 0,
         "autoclear": true,
         "ro": false,
         "back-file": "/tmp/fdtest-explore-Uav0/fs.img",
         "dio": false,
         "log-sec": 512
      }
   ]
}`;

// `losetup --list --json /dev/loop2` right after the device was freed.
const UNATTACHED = `{
   "loopdevices": [
      {
         "name": "/dev/loop2",
         "sizelimit": null,
         "offset": null,
         "autoclear": false,
         "ro": false,
         "back-file": null,
         "dio": false,
         "log-sec": 512
      }
   ]
}`;

const EMPTY = `{
   "loopdevices": [

   ]
}`;

describe('losetup JSON', () => {
  it('reads devices, flags and the deleted-file suffix', () => {
    expect(parseLosetupJson(LIST)).toEqual([
      { device: '/dev/loop1', backingFile: '/tmp/fdtest-explore-Uav0/x/a.raw', backingDeleted: false, readOnly: false, directIo: true, autoclear: false },
      { device: '/dev/loop2', backingFile: '/tmp/fdtest-explore-Uav0/x/sp ace.raw', backingDeleted: true, readOnly: true, directIo: false, autoclear: false },
      { device: '/dev/loop0', backingFile: '/tmp/fdtest-explore-Uav0/fs.img', backingDeleted: false, readOnly: false, directIo: false, autoclear: true },
    ]);
  });

  it.each([
    ['an unattached device', UNATTACHED],
    ['no devices', EMPTY],
    ['no output at all (older util-linux)', ''],
  ])('yields nothing for %s', (_name, text) => {
    expect(parseLosetupJson(text)).toEqual([]);
  });

  it('accepts the "0"/"1" flags of older util-linux', () => {
    const old = '{"loopdevices":[{"name":"/dev/loop5","back-file":"/x","ro":"1","dio":"0","autoclear":"0"}]}';
    expect(parseLosetupJson(old)[0]).toMatchObject({ readOnly: true, directIo: false });
  });
});

/** A Runner that answers from a script and records every argv. */
function scripted(answer: (argv: readonly string[]) => RunResult | Error): { run: Runner; calls: string[][] } {
  const calls: string[][] = [];
  const run: Runner = async (argv) => {
    calls.push([...argv]);
    const a = answer(argv);
    if (a instanceof Error) throw a;
    return a;
  };
  return { run, calls };
}

const ok = (stdout = ''): RunResult => ({ stdout, stderr: '' });
const fail = (argv: readonly string[], stderr: string, exitCode = 1): CommandFailed => new CommandFailed(argv, exitCode, stderr);
const listing = (file: string, device: string, dio: boolean): string =>
  JSON.stringify({ loopdevices: [{ name: device, 'back-file': file, ro: false, dio, autoclear: false }] });

describe('attach and detach decisions', () => {
  const dirs: string[] = [];
  afterEach(() => {
    for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
  });
  function file(): string {
    const dir = mkdtempSync(join(tmpdir(), 'fdtest-unit-'));
    dirs.push(dir);
    const f = join(dir, 'disk.raw');
    writeFileSync(f, '');
    return f;
  }

  it('retries without direct I/O when the kernel refuses it, and says so', async () => {
    const f = file();
    let attached = false;
    const { run, calls } = scripted((argv) => {
      if (argv.includes('--find')) {
        if (argv.includes('--direct-io=on')) return fail(argv, `losetup: ${f}: failed to set up loop device: Invalid argument`);
        attached = true;
        return ok('/dev/loop4');
      }
      return ok(attached ? listing(f, '/dev/loop4', false) : EMPTY);
    });
    const dev = await makeLoopDevices(run).attach(f, { readOnly: false, directIo: true });
    expect(dev).toMatchObject({ device: '/dev/loop4', directIo: false });
    expect(calls.filter((c) => c.includes('--find'))).toHaveLength(2);
  });

  it('never attaches twice when an older losetup attached before failing to switch direct I/O on', async () => {
    const f = file();
    let attached = false;
    const { run, calls } = scripted((argv) => {
      if (argv.includes('--find')) {
        attached = true;
        return fail(argv, 'losetup: /dev/loop4: set direct io failed: Invalid argument');
      }
      return ok(attached ? listing(f, '/dev/loop4', false) : EMPTY);
    });
    const dev = await makeLoopDevices(run).attach(f, { readOnly: false, directIo: true });
    expect(dev).toMatchObject({ device: '/dev/loop4', directIo: false });
    expect(calls.filter((c) => c.includes('--find'))).toHaveLength(1);
  });

  it('does not retry an overlap conflict', async () => {
    const f = file();
    const { run, calls } = scripted((argv) =>
      argv.includes('--find') ? fail(argv, `losetup: ${f}: overlapping read-only loop device exists for ${f}`) : ok(EMPTY),
    );
    await expect(makeLoopDevices(run).attach(f, { readOnly: false, directIo: true })).rejects.toThrow(/overlapping/);
    expect(calls.filter((c) => c.includes('--find'))).toHaveLength(1);
  });

  it.each([
    ['losetup: /dev/loop7: detach failed: No such device or address'],
    ['losetup: /dev/loop99: failed to use device: No such device'],
  ])('counts a device that is already gone as detached: %s', async (stderr) => {
    const { run } = scripted((argv) => (argv.includes('--detach') ? fail(argv, stderr) : ok(EMPTY)));
    expect(await makeLoopDevices(run).detach('/dev/loop7')).toBe('detached');
  });

  it('reports a detach the kernel deferred (device still open)', async () => {
    const { run } = scripted((argv) =>
      argv.includes('--detach') ? ok() : ok(JSON.stringify({ loopdevices: [{ name: '/dev/loop2', 'back-file': '/x', autoclear: true }] })),
    );
    expect(await makeLoopDevices(run).detach('/dev/loop2')).toBe('deferred');
  });

  it('reads sizes as exact bigints', async () => {
    const { run } = scripted(() => ok('9007199254740993'));
    expect(await makeLoopDevices(run).size('/dev/loop1')).toBe(9007199254740993n);
  });
});
