/**
 * What holds kernel resources on this machine — mounts, loop devices, qemu
 * processes — found by what they name, and freed by force. Tests use it to
 * check that one test left nothing behind and, when a test failed half-way,
 * to free what it held so that the next test and the scratch cleanup start
 * from a clean machine rather than failing too.
 */
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { parseMountInfo } from '../../src/system/mountinfo.js';
import { exited, until } from './wait.js';

export type Holder =
  | { kind: 'mount'; path: string; fsType: string }
  | { kind: 'loop'; device: string; file: string }
  | { kind: 'process'; pid: number; args: string };

/** Mounts whose mount point, loop devices whose file, and qemu processes whose command line satisfy `names`. */
export function holders(names: (text: string) => boolean): Holder[] {
  const found: Holder[] = [];
  for (const m of parseMountInfo(readFileSync('/proc/self/mountinfo', 'utf8'))) {
    if (names(m.mountPoint)) found.push({ kind: 'mount', path: m.mountPoint, fsType: m.fsType });
  }
  const loops = JSON.parse(execFileSync('losetup', ['-J', '-l', '-O', 'NAME,BACK-FILE'], { encoding: 'utf8' }) || '{"loopdevices":[]}') as {
    loopdevices: { name: string; 'back-file': string | null }[];
  };
  for (const l of loops.loopdevices) if (l['back-file'] !== null && names(l['back-file'])) found.push({ kind: 'loop', device: l.name, file: l['back-file'] });
  let procs = '';
  try {
    procs = execFileSync('pgrep', ['-a', '-f', 'qemu-storage-daemon|qemu-nbd'], { encoding: 'utf8' });
  } catch {
    procs = ''; // pgrep exits 1 when nothing matches
  }
  for (const line of procs.split('\n')) {
    const pid = Number.parseInt(line, 10);
    if (Number.isInteger(pid) && names(line) && !exited(pid)) found.push({ kind: 'process', pid, args: line.slice(line.indexOf(' ') + 1) });
  }
  return found;
}

export function describeHolder(h: Holder): string {
  if (h.kind === 'mount') return `mount ${h.path} (${h.fsType})`;
  if (h.kind === 'loop') return `loop ${h.device} on ${h.file}`;
  return `process ${h.pid}: ${h.args}`;
}

const quietly = (file: string, args: string[]): boolean => {
  try {
    execFileSync(file, args, { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
};

/**
 * Frees what `found` lists: unmounts (deepest first, lazily when busy),
 * detaches loop devices, SIGKILLs processes and waits for them to exit.
 * Best effort; the caller looks again to see what is still there.
 */
export async function release(found: readonly Holder[]): Promise<void> {
  const mounts = found.filter((h) => h.kind === 'mount').sort((a, b) => b.path.length - a.path.length);
  for (const m of mounts) if (!quietly('umount', [m.path])) quietly('umount', ['-l', m.path]);
  for (const l of found) if (l.kind === 'loop') quietly('losetup', ['-d', l.device]);
  const procs = found.filter((h) => h.kind === 'process');
  for (const p of procs) {
    try {
      process.kill(p.pid, 'SIGKILL');
    } catch {
      // gone already
    }
  }
  for (const p of procs) await until(`process ${p.pid} has exited`, () => exited(p.pid));
}

/**
 * Frees whatever `names` matches and reports what it found (empty: nothing
 * was there). Repeats a few times: a mount that a killed export served, or a
 * loop device freed only at its last close, shows up again after a first pass.
 */
export async function sweepHolders(names: (text: string) => boolean): Promise<string[]> {
  const first = holders(names);
  for (let pass = 0, left = first; left.length > 0 && pass < 3; pass++, left = holders(names)) await release(left);
  return first.map(describeHolder);
}
