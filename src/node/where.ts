/**
 * Whether a path shows a staged volume: the CSI node RPCs that take a path
 * (stats, expansion, unpublish) must not act on another volume's path. A
 * filesystem volume's paths report the loop device as their st_dev; a block
 * volume's target is a device node with the loop device's rdev.
 */
import { stat } from 'node:fs/promises';
import type { StageRecord } from './state.js';

export async function showsVolume(rec: StageRecord, path: string): Promise<boolean> {
  if (path === rec.stagingPath) return true;
  const device = rec.device === undefined ? undefined : await stat(rec.device, { bigint: true }).catch(() => undefined);
  if (device === undefined || !device.isBlockDevice()) {
    // The device is gone (the volume's condition says so): only the paths we recorded.
    return (rec.targets ?? []).some((t) => t.path === path);
  }
  const st = await stat(path, { bigint: true }).catch(() => undefined);
  if (st === undefined) return false;
  return rec.access === 'block' ? st.isBlockDevice() && st.rdev === device.rdev : st.dev === device.rdev;
}
