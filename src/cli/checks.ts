/**
 * What `filedriver doctor` examines. Each check returns findings; with `fix`
 * it also repairs what is safe to repair while a controller may be running:
 * leftovers of dead work in tmp/ (the same rule as start-up's cleanTemp), and
 * hidden snapshots nothing depends on that are past a grace period (a
 * CreateVolume in flight adds its ref moments after such a base appears).
 */
import { readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { existsSync } from 'node:fs';
import { describe } from '../domain/errors.js';
import { StageState } from '../node/state.js';
import { DataPlane, pathOf } from '../system/data-plane.js';
import { cleanTemp, leftover } from '../storage/whole.js';
import { CommandFailed } from '../system/command.js';
import type { Context } from './context.js';
import type { MountInventory, SnapshotEntry, VolumeEntry } from './inventory.js';

export type Status = 'ok' | 'problem' | 'fixed' | 'note';

export interface Finding {
  check: 'tool' | 'qemu' | 'mount' | 'leftover' | 'duplicate' | 'chain' | 'hidden' | 'ref' | 'pending' | 'node';
  subject: string;
  status: Status;
  message: string;
}

/** How old an unreferenced hidden snapshot or a ref without its dependent must be to count. */
export const GRACE_MS = 3600_000;

const TOOLS: [string, string[], string][] = [
  ['qemu-img', ['--version'], 'controller and nodes'],
  ['qemu-storage-daemon', ['--version'], 'nodes (qcow2 volumes)'],
  ['mkfs.ext4', ['-V'], 'nodes (ext4 volumes)'],
  ['mkfs.xfs', ['-V'], 'nodes (xfs volumes)'],
  ['losetup', ['--version'], 'nodes'],
  ['blkid', ['-V'], 'nodes'],
];

export async function checkTools(ctx: Context): Promise<Finding[]> {
  return Promise.all(
    TOOLS.map(async ([tool, args, usedBy]): Promise<Finding> => {
      try {
        const { stdout, stderr } = await ctx.run([tool, ...args], { timeoutMs: 10_000 });
        const version = (stdout || stderr).split('\n')[0] ?? '';
        return { check: 'tool', subject: tool, status: 'ok', message: version };
      } catch (e) {
        return { check: 'tool', subject: tool, status: 'problem', message: `does not run (needed on ${usedBy}): ${describe(e)}` };
      }
    }),
  );
}

/**
 * Which qemu the driver runs, and this host's data plane if it has one: its
 * version and how qcow2 volumes reach their pods. Read only: never starts it.
 */
export async function checkQemu(ctx: Context): Promise<Finding[]> {
  const source = ctx.qemu.manifest === undefined ? "the system's (on PATH)" : `qemu ${ctx.qemu.manifest.version} in ${ctx.qemu.source}`;
  const found: Finding[] = [{ check: 'qemu', subject: 'install', status: 'ok', message: source }];
  const dir = new StageState(join(ctx.config.kubeletDir, 'plugins', ctx.config.driverName)).planeDir;
  const plane = new DataPlane(dir, 'external', ctx.run, ctx.log);
  const socketThere = existsSync(plane.socket);
  const features = socketThere ? await plane.look().catch(() => undefined) : undefined;
  if (features !== undefined) {
    found.push({
      check: 'qemu',
      subject: 'data plane',
      status: features.asyncDirectIo ? 'ok' : 'note',
      message: `qemu ${features.version} at ${plane.socket}: ${pathOf(features)}`,
    });
  } else {
    found.push({
      check: 'qemu',
      subject: 'data plane',
      status: socketThere ? 'problem' : 'note',
      message: socketThere
        ? `${plane.socket} does not answer: qcow2 volumes staged on this host have no I/O`
        : `not running on this host (${dir}); the node plugin or the data-plane pod starts it for the first qcow2 volume`,
    });
  }
  return found;
}

export function checkMounts(inventory: MountInventory[]): Finding[] {
  return inventory.map(({ health: h }) => ({
    check: 'mount',
    subject: h.name,
    status: h.usable ? 'ok' : 'problem',
    message: h.usable ? `${h.path}: usable` : `${h.path}: not usable: ${h.reason ?? 'unknown'}`,
  }));
}

/** Entries in tmp/: removable ones are what cleanTemp removes (a dead process of this host's, or a day old). */
export async function checkLeftovers(m: MountInventory, fix: boolean): Promise<Finding[]> {
  if (!m.health.mounted) return [];
  const tmp = m.layout.tmp;
  const look = async () => (await readdir(tmp).catch(() => [] as string[])).filter((e) => !e.startsWith('.probe-'));
  const entries = await look();
  const states = await Promise.all(
    entries.map(async (e) => ({ entry: e, ...leftover(e, (await stat(join(tmp, e)).catch(() => undefined))?.mtimeMs) })),
  );
  const removable = states.filter((s) => s.removable);
  let remaining = new Set(entries);
  if (fix && m.health.usable && removable.length > 0) {
    await cleanTemp(tmp);
    remaining = new Set(await look());
  }
  return states.map((s): Finding => {
    const subject = `${m.health.name}: tmp/${s.entry}`;
    if (!s.removable) return { check: 'leftover', subject, status: 'note', message: s.why };
    if (!remaining.has(s.entry)) return { check: 'leftover', subject, status: 'fixed', message: `removed (${s.why})` };
    return { check: 'leftover', subject, status: 'problem', message: `leftover of interrupted work (${s.why}); doctor --fix removes it` };
  });
}

/** An id on two mounts: a move interrupted between the copy and the removal, or an admin's copy. */
export function checkDuplicates(inventory: MountInventory[]): Finding[] {
  const findings: Finding[] = [];
  for (const kind of ['volume', 'snapshot'] as const) {
    const where = new Map<string, string[]>();
    for (const m of inventory) {
      for (const e of kind === 'volume' ? m.volumes : m.snapshots) where.set(e.id, [...(where.get(e.id) ?? []), m.health.name]);
    }
    for (const [id, mounts] of where) {
      if (mounts.length < 2) continue;
      const arrived = inventory.flatMap((m) =>
        m.volumes.filter((v) => kind === 'volume' && v.id === id && v.record?.movedFrom !== undefined).map(() => m.health.name),
      );
      findings.push({
        check: 'duplicate',
        subject: `${kind} ${id}`,
        status: 'problem',
        message:
          arrived.length === 1
            ? `is on mounts ${mounts.join(', ')}: a live move was interrupted after its arrival on ${arrived[0] ?? ''}, which is the current copy; the next CSI call on the volume removes the other`
            : `is on mounts ${mounts.join(', ')}; lookups use the first: compare the copies (qemu-img compare) and remove one by hand`,
      });
    }
  }
  return findings;
}

/** Records, images, backing snapshots and their refs, and qemu's view of each chain. */
export async function checkChains(ctx: Context, m: MountInventory): Promise<Finding[]> {
  const findings: Finding[] = [];
  const snapshots = new Map(m.snapshots.map((s) => [s.id, s]));
  const examine = async (kind: 'volume' | 'snapshot', e: VolumeEntry | SnapshotEntry) => {
    const subject = `${m.health.name}: ${kind} ${e.id}`;
    const problem = (message: string) => findings.push({ check: 'chain', subject, status: 'problem', message });
    const r = e.record;
    if (r === undefined || e.image === undefined) return problem(e.error ?? 'unreadable');
    if (e.allocatedBytes === undefined) return problem(`image ${e.image} is missing`);
    if (r.backing !== null) {
      const base = snapshots.get(r.backing);
      if (base === undefined) return problem(`is backed by snapshot ${r.backing}, whose directory is missing`);
      if (!base.dependents.includes(e.id))
        problem(`is backed by snapshot ${r.backing} but not listed in its refs/: the base could be removed under it`);
    }
    if (r.format !== 'qcow2') return undefined;
    try {
      await ctx.qemuImg.backingChain(e.image, r.format);
    } catch (err) {
      return problem(`its backing chain does not open: ${err instanceof CommandFailed ? err.message : describe(err)}`);
    }
    const check = await ctx.qemuImg.check(e.image, r.format);
    if (!check.ok) problem(`qemu-img check: ${check.problem}`);
    return undefined;
  };
  for (const v of m.volumes) await examine('volume', v);
  for (const s of m.snapshots) await examine('snapshot', s);
  if (findings.length === 0 && m.volumes.length + m.snapshots.length > 0) {
    findings.push({
      check: 'chain',
      subject: m.health.name,
      status: 'ok',
      message: `${m.volumes.length} volume(s) and ${m.snapshots.length} snapshot(s) intact`,
    });
  }
  return findings;
}

/** Work handed between controller and node that has waited long: a node that is gone, or a failure. */
export function checkPending(m: MountInventory): Finding[] {
  return m.volumes.flatMap((v) =>
    v.pending.map((p): Finding => {
      const minutes = Math.round((Date.now() - p.sinceMs) / 60_000);
      const subject = `${m.health.name}: volume ${v.id}`;
      const late = Date.now() - p.sinceMs > GRACE_MS || p.detail.includes('(failed:');
      return late
        ? {
            check: 'pending',
            subject,
            status: 'problem',
            message: `${p.kind}: ${p.detail}, for ${minutes} min: is the node serving it (published to ${v.record?.publications.map((x) => x.node).join(', ') || 'none'}) running? Retrying the CSI call (or detaching) finishes it`,
          }
        : { check: 'pending', subject, status: 'note', message: `${p.kind}: ${p.detail}` };
    }),
  );
}

/** Hidden snapshots nothing depends on (normally removed with their last dependent), and refs naming nothing. */
export async function checkHidden(ctx: Context, m: MountInventory, fix: boolean): Promise<Finding[]> {
  const findings: Finding[] = [];
  const backs = new Map<string, string | null>([...m.volumes, ...m.snapshots].map((e) => [e.id, e.record?.backing ?? null]));
  for (const s of m.snapshots) {
    const r = s.record;
    if (r === undefined) continue;
    const subject = `${m.health.name}: snapshot ${s.id}`;
    for (const dependent of s.dependents) {
      if (backs.get(dependent) === s.id) continue;
      const age = await ageMs(join(m.layout.refsDir(s.id), dependent));
      findings.push(
        age < GRACE_MS
          ? { check: 'ref', subject, status: 'note', message: `refs/${dependent} names no dependent yet (a clone being made?)` }
          : {
              check: 'ref',
              subject,
              status: 'problem',
              message: `refs/${dependent} names no volume or snapshot backed by it; it keeps the snapshot alive: remove the ref by hand once no clone of it is being made`,
            },
      );
    }
    if (!r.deleted || s.dependents.length > 0) continue;
    const age = await ageMs(m.layout.refsDir(s.id));
    if (age < GRACE_MS) {
      findings.push({ check: 'hidden', subject, status: 'note', message: 'hidden and without dependents, but recent (a clone being made?)' });
    } else if (fix && m.health.usable) {
      await ctx.snapshots.delete(m.layout, s.id);
      findings.push({ check: 'hidden', subject, status: 'fixed', message: 'hidden snapshot without dependents removed' });
    } else {
      findings.push({
        check: 'hidden',
        subject,
        status: 'problem',
        message: 'hidden (deleted) but nothing depends on it any more; doctor --fix removes it',
      });
    }
  }
  return findings;
}

async function ageMs(path: string): Promise<number> {
  const st = await stat(path).catch(() => undefined);
  return st === undefined ? Number.POSITIVE_INFINITY : Date.now() - st.mtimeMs;
}
