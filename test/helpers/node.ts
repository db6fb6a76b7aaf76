/** Node-side helpers: kubelet-like paths and checks that nothing was left behind. */
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';

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
