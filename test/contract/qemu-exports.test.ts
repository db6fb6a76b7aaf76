/** The QemuExports contract against the node's data plane (the machine's qemu-storage-daemon; root, FUSE) and against the fake sharing FakeQemuImg's locks. */
import { mkdtempSync, realpathSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { afterAll } from 'vitest';
import { makeRunner, onPath } from '../../src/system/command.js';
import { DataPlane } from '../../src/system/data-plane.js';
import { makeQemuExports } from '../../src/system/qemu-export.js';
import { makeQemuImg } from '../../src/system/qemu-img.js';
import { findQemu } from '../../src/system/qemu-tools.js';
import { FakeQemuExports } from '../fakes/qemu-exports.js';
import { FakeQemuImg } from '../fakes/qemu-img.js';
import { isRoot } from '../helpers/root.js';
import { makeScratch } from '../helpers/scratch.js';
import { qemuExportsContract } from './qemu-exports.contract.js';

qemuExportsContract('the fake', () => {
  const img = new FakeQemuImg();
  const dir = realpathSync(mkdtempSync(join(tmpdir(), 'fdtest-qx-')));
  return { exports: new FakeQemuExports({ qemuImg: img }), img, dir, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
});

if (isRoot && onPath('qemu-storage-daemon') !== undefined) {
  const silent = pino({ level: 'silent' });
  const run = makeRunner(silent, { qemu: findQemu(undefined) });
  const planeDir = mkdtempSync(join(tmpdir(), 'fdtest-dp-'));
  const plane = new DataPlane(planeDir, 'managed', run, silent);
  afterAll(async () => {
    // Every test stopped its exports: the idle daemon goes with the directory.
    await plane.stopIfIdle();
    rmSync(planeDir, { recursive: true, force: true });
  });
  qemuExportsContract('the data plane on a tmpfs', () => {
    const scratch = makeScratch('tmpfs', 128);
    return { exports: makeQemuExports(plane, run, silent), img: makeQemuImg(run), dir: scratch.path, cleanup: () => scratch.cleanup() };
  });
}
