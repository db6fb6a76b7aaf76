/**
 * The node's system adapters as fakes, wired as they read each other: loop
 * devices read through the exports' files, filesystems through the loop
 * devices. With `qemuImg`, the exports share its image locks.
 */
import type { NodeSystem } from '../../src/node/system.js';
import { FakeFilesystems } from './filesystems.js';
import { FakeLoopDevices } from './loop-devices.js';
import { FakeQemuExports, type FakeQemuExportsOptions } from './qemu-exports.js';

export interface FakeNodeSystem extends NodeSystem {
  loops: FakeLoopDevices;
  exports: FakeQemuExports;
  fs: FakeFilesystems;
}

export function fakeNodeSystem(options: FakeQemuExportsOptions = {}): FakeNodeSystem {
  const exports = new FakeQemuExports(options);
  const loops = new FakeLoopDevices((file) => exports.view(file));
  return { exports, loops, fs: new FakeFilesystems(loops) };
}
