/** The LoopDevices contract against losetup on a tmpfs (root only) and against the fake on a temp directory. */
import { mkdtempSync, realpathSync, rmSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { makeRunner } from '../../src/system/command.js';
import { makeLoopDevices } from '../../src/system/loop-devices.js';
import { FakeLoopDevices } from '../fakes/loop-devices.js';
import { isRoot } from '../helpers/root.js';
import { makeScratch } from '../helpers/scratch.js';
import { loopDevicesContract } from './loop-devices.contract.js';

loopDevicesContract('the fake', () => {
  const loops = new FakeLoopDevices();
  const dir = realpathSync(mkdtempSync(join(tmpdir(), 'fdtest-loops-')));
  return {
    loops,
    dir,
    open: async (device) => {
      const close = loops.open(device);
      return close;
    },
    cleanup: () => rmSync(dir, { recursive: true, force: true }),
  };
});

if (isRoot) {
  loopDevicesContract('losetup on a tmpfs', () => {
    const scratch = makeScratch('tmpfs', 64);
    return {
      loops: makeLoopDevices(makeRunner(pino({ level: 'silent' }))),
      dir: scratch.path,
      open: async (device) => {
        const handle = await open(device, 'r');
        return () => handle.close();
      },
      cleanup: () => scratch.cleanup(),
    };
  });
}
