/**
 * The one mechanism by which objects appear and disappear on a mount: built
 * whole in the temp area and renamed into place; removed by renaming out of
 * sight first. A crash at any moment leaves a whole object or none.
 */
import { readFileSync } from 'node:fs';
import { mkdir, readdir, rename, rm, stat } from 'node:fs/promises';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { unavailable } from '../domain/errors.js';
import { uniqueSuffix } from './records.js';

/** Temp entries are named host_pid_random so start-up can tell its own dead leftovers. */
const HOST = hostname();
const STALE_MS = 24 * 3600_000;

export function workName(): string {
  return `${HOST}_${process.pid}_${uniqueSuffix()}`;
}

/**
 * Work entries of this process whose removal could not happen because their
 * share had gone (a lazily unmounted or unreachable share keeps them out of
 * reach), by temp area. Removed as soon as the share is back: the next health
 * check that finds it usable, or the next build or removal there. Start-up
 * would only get them at the next restart, holding their space until then.
 */
const orphans = new Map<string, Set<string>>();

/** Removes this process's orphaned work entries in `tmp`, if the share is back (tmp/ exists). Returns how many. */
export async function sweepOrphans(tmp: string): Promise<number> {
  const names = orphans.get(tmp);
  if (names === undefined || (await stat(tmp).catch(() => undefined)) === undefined) return 0;
  let removed = 0;
  for (const name of [...names]) {
    await rm(join(tmp, name), { recursive: true, force: true });
    names.delete(name);
    removed++;
  }
  if (names.size === 0) orphans.delete(tmp);
  return removed;
}

/** Removes a work entry; when its share is gone, remembers it for sweepOrphans. */
async function discard(tmp: string, name: string): Promise<void> {
  await rm(join(tmp, name), { recursive: true, force: true }).catch(() => undefined);
  // rm -f of a path the share no longer shows "succeeds": only tmp/ itself tells.
  if ((await stat(tmp).catch(() => undefined)) !== undefined) return;
  const names = orphans.get(tmp) ?? new Set<string>();
  names.add(name);
  orphans.set(tmp, names);
}

/**
 * Runs `build` in a fresh directory of `tmp`, then renames it to `target`.
 * Returns false when `target` appeared meanwhile (our work is discarded).
 */
export async function buildWhole(tmp: string, target: string, build: (dir: string) => Promise<void>): Promise<boolean> {
  await sweepOrphans(tmp);
  const name = workName();
  const work = join(tmp, name);
  // Not recursive: tmp/ exists only on the real share (the health probe made it). Had the share
  // been unmounted since, a recursive mkdir would recreate the tree in the bare mountpoint.
  try {
    await mkdir(work);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT')
      throw unavailable(`${tmp} is gone: the share is no longer mounted there; retry when it is back`);
    throw e;
  }
  try {
    await build(work);
    await rename(work, target);
    return true;
  } catch (e) {
    await discard(tmp, name);
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOTEMPTY' || code === 'EEXIST') return false;
    throw e;
  }
}

/** Renames `dir` into `tmp`, then deletes it. A missing `dir` is already removed. */
export async function removeWhole(tmp: string, dir: string): Promise<void> {
  await sweepOrphans(tmp);
  const name = `${workName()}-deleting`;
  try {
    await rename(dir, join(tmp, name));
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
    // Missing is "already removed" only while the share is there: tmp/ exists only on the share.
    if ((await stat(tmp).catch(() => undefined)) === undefined)
      throw unavailable(`${tmp} is gone: the share is no longer mounted there; retry when it is back`);
    return;
  }
  await discard(tmp, name);
}

/**
 * Whether a temp entry is a leftover of interrupted work, and why: made on
 * this host by a process that is gone, or a day old. Live work by another
 * process is never one. Our own pid counts as gone: a container restarted
 * with the same pid left it.
 */
export function leftover(entry: string, mtimeMs: number | undefined): { removable: boolean; why: string } {
  const [host, pid] = entry.split('_');
  if (host === HOST && pid !== undefined && !isAlive(Number(pid))) {
    return { removable: true, why: `left by process ${pid} on this host, which is gone` };
  }
  if (mtimeMs === undefined || Date.now() - mtimeMs > STALE_MS) return { removable: true, why: 'older than a day' };
  return host === HOST
    ? { removable: false, why: `work in progress of process ${pid ?? '?'} on this host` }
    : { removable: false, why: `made on host ${host ?? '?'} less than a day ago: work in progress there, or removed once a day old` };
}

/** Removes the leftovers in a temp area (call before serving). Returns how many. */
export async function cleanTemp(tmp: string): Promise<number> {
  let entries: string[];
  try {
    entries = await readdir(tmp);
  } catch {
    return 0;
  }
  let removed = 0;
  for (const entry of entries) {
    // A health probe lives for one write and unlink; one is left only by a process killed in between.
    const probe = entry.startsWith('.probe-');
    // Our own may be mid-check (background work started before this clean-up): it removes itself.
    if (entry.startsWith(`.probe-${HOST}_${process.pid}_`)) continue;
    const path = join(tmp, entry);
    const st = await stat(path).catch(() => undefined);
    if (!leftover(probe ? entry.slice('.probe-'.length) : entry, st?.mtimeMs).removable) continue;
    await rm(path, { recursive: true, force: true });
    removed++;
  }
  return removed;
}

/**
 * Whether a process still runs. A zombie does not: kill(pid, 0) succeeds on
 * one, and a killed controller stays a zombie until its parent (the container
 * runtime, a shell) reaps it, which a restart does not wait for.
 */
export function isAlive(pid: number): boolean {
  if (!Number.isInteger(pid) || pid <= 0 || pid === process.pid) return false;
  try {
    process.kill(pid, 0);
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
  return !isZombie(pid);
}

/** /proc/<pid>/stat: the state follows the command name in parentheses (which may hold spaces). */
function isZombie(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${String(pid)}/stat`, 'utf8');
    const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
    return state === 'Z' || state === 'X';
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'ENOENT'; // gone between the kill and the read
  }
}

/** Sorted valid ids in a directory; a missing directory has none. */
export async function idsIn(dir: string, valid: (id: string) => boolean): Promise<string[]> {
  try {
    return (await readdir(dir)).filter(valid).sort();
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw e;
  }
}
