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
import { exited } from './wait.js';

export type Holder =
  { kind: 'mount'; path: string; fsType: string } | { kind: 'loop'; device: string; file: string } | { kind: 'process'; pid: number; args: string };

/**
 * Loop devices whose file, mounts whose mount point (or whose device is such a
 * loop device: the filesystem on it holds it), and qemu processes whose
 * command line satisfy `names`.
 */
export function holders(names: (text: string) => boolean): Holder[] {
  const found: Holder[] = [];
  const loops = JSON.parse(execFileSync('losetup', ['-J', '-l', '-O', 'NAME,BACK-FILE'], { encoding: 'utf8' }) || '{"loopdevices":[]}') as {
    loopdevices: { name: string; 'back-file': string | null }[];
  };
  const devices = new Set<string>();
  for (const l of loops.loopdevices) {
    if (l['back-file'] === null || !names(l['back-file'])) continue;
    devices.add(l.name);
    found.push({ kind: 'loop', device: l.name, file: l['back-file'] });
  }
  for (const m of parseMountInfo(readFileSync('/proc/self/mountinfo', 'utf8'))) {
    if (names(m.mountPoint) || devices.has(m.source)) found.push({ kind: 'mount', path: m.mountPoint, fsType: m.fsType });
  }
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

/** Blocks this thread for `ms` (cleanup paths are synchronous, like the scratch cleanup that calls them). */
const pause = (ms: number): void => void Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);

/**
 * Frees what `found` lists: unmounts (deepest first, lazily when busy),
 * detaches loop devices, SIGKILLs processes and waits until they have exited.
 * Best effort; the caller looks again to see what is still there.
 */
export function release(found: readonly Holder[]): void {
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
  // A SIGKILLed process exits when the scheduler runs it; the bound only keeps a wedged one from hanging the run.
  for (const end = Date.now() + 30_000; procs.some((p) => !exited(p.pid)) && Date.now() < end;) pause(20);
}

/**
 * Frees whatever `names` matches and reports what it found (empty: nothing
 * was there). Looks again after each pass: a loop device or a mount that was
 * busy while something above it still held it goes on a second pass.
 */
export function sweepHolders(names: (text: string) => boolean): string[] {
  const first = holders(names);
  for (let pass = 0, left = first; left.length > 0 && pass < 3; pass++, left = holders(names)) release(left);
  return first.map(describeHolder);
}
