/** The system adapters the node service drives; real ones in app.ts, fakes in tests. */
import type { Filesystems } from '../system/filesystems.js';
import type { LoopDevices } from '../system/loop-devices.js';
import type { QemuExports } from '../system/qemu-export.js';

export interface NodeSystem {
  loops: LoopDevices;
  exports: QemuExports;
  fs: Filesystems;
}
