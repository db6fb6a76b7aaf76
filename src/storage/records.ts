/**
 * volume.json: what the driver knows about a volume besides its image.
 * Written whole to a temp file and renamed, so a reader never sees half a record.
 */
import { randomBytes } from 'node:crypto';
import { open, readFile, rename, rm } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import type { AccessMode } from '../domain/capabilities.js';
import type { Format } from '../domain/parameters.js';
import { internal } from '../domain/errors.js';
import { isValidId } from '../domain/ids.js';

export const SCHEMA = 1;

export interface VolumeRecord {
  schema: number;
  id: string;
  /** The CreateVolume request name the id was derived from. */
  name: string;
  format: Format;
  /** Decimal bytes: sizes can exceed 2^53. */
  sizeBytes: string;
  createdAt: string;
  /** StorageClass parameters as given, for idempotency checks. */
  parameters: Record<string, string>;
  contentSource: { type: 'snapshot' | 'volume'; id: string } | null;
  /** The snapshot whose image backs this one (a linked clone), if any. */
  backing: string | null;
  pvc: { name: string; namespace: string } | null;
  /** Nodes the volume is published to (ControllerPublishVolume): the fence. */
  publications: Publication[];
  /** Set while a live move finishes: the mount it came from, where a stale copy may remain. */
  movedFrom?: string;
}

export interface Publication {
  node: string;
  mode: AccessMode;
  readonly: boolean;
}

export function uniqueSuffix(): string {
  return randomBytes(6).toString('hex');
}

/** Writes JSON durably: temp file, fsync, rename over the target. */
export async function writeJsonAtomic(path: string, value: unknown): Promise<void> {
  const tmp = join(dirname(path), `.${uniqueSuffix()}.tmp`);
  const fh = await open(tmp, 'wx', 0o644);
  try {
    await fh.writeFile(`${JSON.stringify(value, null, 2)}\n`);
    await fh.sync();
  } finally {
    await fh.close();
  }
  try {
    await rename(tmp, path);
  } catch (e) {
    await rm(tmp, { force: true });
    throw e;
  }
}

/** A file's text, or undefined when it does not exist. */
export async function readText(path: string): Promise<string | undefined> {
  try {
    return await readFile(path, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw e;
  }
}

/** A small JSON file the driver wrote (intents, requests), or undefined when there is none. */
export async function readJsonFile<T>(path: string): Promise<T | undefined> {
  const text = await readText(path);
  return text === undefined ? undefined : (parseJson(text, path) as T);
}

export async function readRecord(path: string): Promise<VolumeRecord | undefined> {
  const r = await readJsonFile<Partial<VolumeRecord>>(path);
  if (r === undefined) return undefined;
  checkBacking(r.backing, path);
  // The file is JSON on a share: a hand-edited size may be a number, which passes as digits.
  const size: unknown = r.sizeBytes;
  const digits = typeof size === 'string' || typeof size === 'number' ? String(size) : '';
  if (size !== undefined && !/^\d+$/.test(digits))
    throw internal(`${path} gives size ${JSON.stringify(size)}, not a byte count; run filedriver doctor`);
  return {
    schema: r.schema ?? SCHEMA,
    id: r.id ?? '',
    name: r.name ?? '',
    format: r.format === 'raw' ? 'raw' : 'qcow2',
    sizeBytes: r.sizeBytes ?? '0',
    createdAt: r.createdAt ?? new Date(0).toISOString(),
    parameters: r.parameters ?? {},
    contentSource: r.contentSource ?? null,
    backing: r.backing ?? null,
    pvc: r.pvc ?? null,
    publications: r.publications ?? [],
    ...(r.movedFrom === undefined ? {} : { movedFrom: r.movedFrom }),
  };
}

export interface SnapshotRecord {
  schema: number;
  id: string;
  /** The CreateSnapshot name, or a description for the driver's own bases. */
  name: string;
  /** The volume it was taken of; empty for a golden image base. */
  sourceVolumeId: string;
  format: Format;
  sizeBytes: string;
  createdAt: string;
  /**
   * reflink: a shared-extent copy; copy: qemu-img convert; layer: the source
   * volume's own image, frozen, with the volume continuing in an overlay on it.
   */
  method: 'reflink' | 'copy' | 'layer';
  /** A layer whose volume has not switched to its overlay yet: not ready to use. */
  pending?: boolean;
  /** Snapshots whose image backs this one. */
  backing: string | null;
  /** Deleted by the CO but still backing a dependent: hidden, removed with its last dependent. */
  deleted: boolean;
  /** Not a CSI snapshot: a golden image or a volume-clone base the driver made. */
  internal: boolean;
}

export async function readSnapshot(path: string): Promise<SnapshotRecord | undefined> {
  const r = await readJsonFile<SnapshotRecord>(path);
  if (r === undefined) return undefined;
  checkBacking(r.backing, path);
  return r;
}

/** A record that is not JSON (a torn write by another tool, a hand edit) names itself. */
function parseJson(text: string, path: string): unknown {
  try {
    return JSON.parse(text) as unknown;
  } catch (e) {
    throw internal(`${path} is not valid JSON (${e instanceof Error ? e.message : String(e)}); run filedriver doctor`);
  }
}

/** `backing` becomes a path the driver removes: only a plain id may name it. */
function checkBacking(backing: unknown, path: string): void {
  if (backing === undefined || backing === null) return;
  if (typeof backing !== 'string' || !isValidId(backing)) {
    throw internal(`${path} names backing ${JSON.stringify(backing)}, which is not a valid snapshot id; run filedriver doctor`);
  }
}
