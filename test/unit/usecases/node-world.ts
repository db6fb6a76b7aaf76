/**
 * The node's use cases wired as app.ts wires them (Stager, Publisher,
 * NodeHealth, NodeLayering on a StageState), over the controller's world of
 * ./world.ts: volumes are made by its VolumeService on fake shares, and the
 * node's adapters are the fakes of test/fakes/node-system.ts, sharing qemu's
 * image locks with its FakeQemuImg. The kubelet directory is a temp
 * directory. No root, no qemu.
 */
import { mkdtempSync, realpathSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Capability } from '../../../src/domain/capabilities.js';
import { KeyedLocks } from '../../../src/domain/locks.js';
import type { Format } from '../../../src/domain/parameters.js';
import { NodeHealth } from '../../../src/node/health.js';
import { NodeLayering } from '../../../src/node/layers.js';
import { Publisher, type PublishInput } from '../../../src/node/publish.js';
import { SafePaths } from '../../../src/node/safe-path.js';
import { Stager, type StageInput } from '../../../src/node/stage.js';
import { StageState } from '../../../src/node/state.js';
import type { Medium } from '../../fakes/medium.js';
import { fakeNodeSystem } from '../../fakes/node-system.js';
import { DRIVER, log, world, type WorldOptions } from './world.js';

export const blockCap: Capability = { access: 'block', mode: 'SINGLE_NODE_WRITER' };
export const fsCap = (over: Partial<Extract<Capability, { access: 'mount' }>> = {}): Capability => ({
  access: 'mount',
  mode: 'SINGLE_NODE_WRITER',
  fsType: 'ext4',
  mountFlags: [],
  volumeMountGroup: '',
  ...over,
});

export function nodeWorld(options: WorldOptions = {}) {
  const controller = world({ shares: ['fast'], ...options });
  const kubelet = realpathSync(mkdtempSync(join(tmpdir(), 'fdtest-kubelet-')));
  const state = new StageState(join(kubelet, 'plugins', DRIVER));
  const paths = new SafePaths(kubelet);

  /** The node plugin's parts on a fresh system (a new boot: no devices, mounts or exports) and the same state directory. */
  const boot = () => {
    const sys = fakeNodeSystem({ qemuImg: controller.qemuImg });
    // One set of locks for the node's RPCs and its background work, as in app.ts.
    const locks = new KeyedLocks();
    const layers = new NodeLayering(controller.mounts, state, sys.exports, locks, log);
    return {
      sys,
      locks,
      layers,
      stager: new Stager(controller.store, state, sys, layers),
      publisher: new Publisher(state, sys),
      health: new NodeHealth(state, sys),
    };
  };
  let node = boot();

  const staging = (id: string) => join(kubelet, 'plugins', 'kubernetes.io', 'csi', DRIVER, id, 'globalmount');
  const target = (id: string, pod = 'pod-1') => join(kubelet, 'pods', pod, 'volumes', 'kubernetes.io~csi', id, 'mount');

  return {
    ...controller,
    kubelet,
    state,
    paths,
    get node() {
      return node;
    },
    get sys() {
      return node.sys;
    },
    /** The node restarts after a reboot: devices, mounts and exports are gone, the stage records stay. */
    async reboot() {
      await node.sys.exports.kill();
      await node.sys.loops.reboot();
      node = boot();
    },
    staging,
    target,
    /** A 16 MiB volume made by CreateVolume; its image path. */
    async volume(id: string, format: Format = 'qcow2') {
      const v = await controller.volumes.create(controller.request(id, { parameters: { format } }), log);
      return { ...v, image: controller.shares.layout(v.mount).imagePath(id, format) };
    },
    stageInput: (volumeId: string, capability: Capability = fsCap(), readonly = false): StageInput => ({
      volumeId,
      stagingPath: staging(volumeId),
      capability,
      readonly,
      paths,
    }),
    publishInput: (volumeId: string, capability: Capability = fsCap(), readonly = false, pod = 'pod-1'): PublishInput => ({
      volumeId,
      stagingPath: staging(volumeId),
      targetPath: target(volumeId, pod),
      capability,
      readonly,
      paths,
    }),
    /** What the pod reads and writes: `id`'s staged loop device, looked up at each call (a restage gives it a new one). */
    device(id: string): Pick<Medium, 'read' | 'write'> {
      const medium = async () => {
        const m = node.sys.loops.medium((await state.read(id))?.device ?? '');
        if (m === undefined || m === 'dead') throw new Error(`the loop device of ${id} is gone`);
        return m.medium;
      };
      return {
        read: async (offset, length) => (await medium()).read(offset, length),
        write: async (offset, data) => (await medium()).write(offset, data),
      };
    },
    /** What is attached, mounted and exported on the node. */
    async held() {
      return {
        loops: (await node.sys.loops.list()).map((d) => d.backingFile),
        mounts: node.sys.fs.mounts().map((m) => m.mountPoint),
        exports: node.sys.exports.tags(),
      };
    },
    /** Closes what the fakes hold open, and removes the shares and the kubelet directory. */
    async cleanup() {
      await node.sys.exports.kill();
      await node.sys.loops.reboot();
      controller.cleanup();
      rmSync(kubelet, { recursive: true, force: true });
    },
  };
}

export type NodeWorld = ReturnType<typeof nodeWorld>;
