/** Node-side helpers: kubelet-like paths and checks that nothing was left behind. */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll } from 'vitest';
import { rootOnlyReason } from './root.js';
import { makeScratch, type Scratch } from './scratch.js';
import { startDriver, type Driver } from './server.js';

export function kubeletPaths(kubeletDir: string, volumeId: string, pod = 'pod-1') {
  return {
    staging: join(kubeletDir, 'plugins/kubernetes.io/csi/filedriver.dev', volumeId, 'globalmount'),
    target: join(kubeletDir, 'pods', pod, 'volumes/kubernetes.io~csi', volumeId, 'mount'),
    device: join(kubeletDir, 'plugins/kubernetes.io/csi/volumeDevices/publish', volumeId, pod),
  };
}

/** Mounts, loop devices and qemu processes that mention `fragment`. */
export function leftovers(fragment: string): string[] {
  const found: string[] = [];
  for (const line of readFileSync('/proc/self/mountinfo', 'utf8').split('\n')) if (line.includes(fragment)) found.push(`mount ${line}`);
  const loops = execFileSync('losetup', ['-a'], { encoding: 'utf8' });
  for (const line of loops.split('\n')) if (line.includes(fragment)) found.push(`loop ${line}`);
  let procs = '';
  try {
    procs = execFileSync('pgrep', ['-a', '-f', 'qemu-storage-daemon'], { encoding: 'utf8' });
  } catch {
    procs = '';
  }
  for (const line of procs.split('\n')) if (line.includes(fragment)) found.push(`process ${line}`);
  return found;
}

export interface NodeRig {
  share: Scratch;
  kubelet: string;
  driver: Driver;
}

/**
 * For a describe block: a driver serving one xfs scratch share (over-subscription 10) with a
 * kubelet dir of its own, made before the block's tests and removed after them. Read its
 * fields inside tests and hooks, not at collection time.
 */
export function useNodeRig(shareMiB: number): NodeRig {
  const rig = {} as NodeRig;
  beforeAll(async () => {
    rootOnlyReason();
    rig.share = makeScratch('xfs', shareMiB);
    rig.kubelet = mkdtempSync(join(tmpdir(), 'fdtest-kubelet-'));
    rig.driver = await startDriver({ mounts: { s: rig.share.path }, args: ['--kubelet-dir', rig.kubelet, '--over-subscription', '10'] });
  });
  afterAll(async () => {
    await rig.driver?.stop();
    rig.share?.cleanup();
    if (rig.kubelet !== undefined) rmSync(rig.kubelet, { recursive: true, force: true });
  });
  return rig;
}
