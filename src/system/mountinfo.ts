/**
 * Reads /proc/self/mountinfo: the authoritative answer to "is this path a mount
 * point", and the one that does not hang on a stale FUSE or NFS mount (stat does).
 */
import { readFile } from 'node:fs/promises';

export interface MountEntry {
  mountId: number;
  parentId: number;
  /** Path inside the mounted filesystem that is mounted here ("/" for a whole fs). */
  root: string;
  mountPoint: string;
  options: string;
  fsType: string;
  source: string;
  superOptions: string;
}

/** mountinfo escapes space, tab, newline and backslash as octal (\040 …). */
function unescape(field: string): string {
  return field.replace(/\\([0-7]{3})/g, (_, oct: string) => String.fromCharCode(parseInt(oct, 8)));
}

export function parseMountInfo(text: string): MountEntry[] {
  const entries: MountEntry[] = [];
  for (const line of text.split('\n')) {
    if (line.trim() === '') continue;
    const sep = line.indexOf(' - ');
    if (sep < 0) continue;
    const left = line.slice(0, sep).split(' ');
    const right = line.slice(sep + 3).split(' ');
    const [mountId, parentId, , root, mountPoint, options] = left;
    const [fsType, source, superOptions] = right;
    if (mountPoint === undefined || root === undefined || fsType === undefined) continue;
    entries.push({
      mountId: Number(mountId),
      parentId: Number(parentId),
      root: unescape(root),
      mountPoint: unescape(mountPoint),
      options: options ?? '',
      fsType,
      source: unescape(source ?? ''),
      superOptions: superOptions ?? '',
    });
  }
  return entries;
}

export async function readMountInfo(file = '/proc/self/mountinfo'): Promise<MountEntry[]> {
  return parseMountInfo(await readFile(file, 'utf8'));
}

/** The topmost mount at exactly `path` (later lines shadow earlier ones), if any. */
export function mountAt(entries: readonly MountEntry[], path: string): MountEntry | undefined {
  let found: MountEntry | undefined;
  for (const e of entries) if (e.mountPoint === path) found = e;
  return found;
}
