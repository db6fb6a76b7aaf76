/**
 * A live move, on disk: a qcow2 volume a node serves goes to another mount
 * while the pod writes. The node's qemu moves the writes first — onto a new
 * top layer on the target mount, reading through the old chain — then the
 * old chain, immutable from that moment, is copied to the target as the new
 * top's base, qemu is pointed at the copy, and the volume's records follow:
 *
 *   1. intent    <from>/volumes/<v>/moving.json {to, base}; <to>/moving/<v>/disk.qcow2, a qcow2
 *                overlay whose header already names the base: ../../snapshots/<base>/disk.qcow2
 *   2. switching the node is about to move the writes (written before it acts)
 *   3. switched  the writes land on the target; the source chain is immutable
 *   4. based     the base, a flattened copy of the source chain, is in <to>/snapshots/<base>/
 *   5. repointed the node's qemu reads the base instead of the source chain (skipped when no
 *                node serves the volume any more: the top's header names the base already)
 *   6. the volume appears in <to>/volumes/<v>/ (recording movedFrom), the source goes
 *
 * From step 2 on, the target holds the only copy of the newest writes: a move
 * is never undone after it, only finished, and the node refuses to stage the
 * volume until it is.
 */
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import type { Layout } from './layout.js';
import { readJsonFile, writeJsonAtomic } from './records.js';

export interface MoveIntent {
  /** The target mount's name. */
  to: string;
  /** The hidden snapshot on the target that becomes the new top's base. */
  base: string;
  switching?: boolean;
  switched?: boolean;
  based?: boolean;
  repointed?: boolean;
  /** A node that could not switch (before `switching` took effect) says why; the move is undone. */
  error?: string;
}

export const moveIntentPath = (from: Layout, volumeId: string): string => join(from.volumeDir(volumeId), 'moving.json');
/** Where the new top waits on the target: at the depth of volumes/<id>/, so relative backing references hold. */
export const arrivalDir = (to: Layout, volumeId: string): string => join(to.moving, volumeId);
export const arrivalImage = (to: Layout, volumeId: string): string => join(arrivalDir(to, volumeId), 'disk.qcow2');

export const readMove = (from: Layout, volumeId: string): Promise<MoveIntent | undefined> => readJsonFile(moveIntentPath(from, volumeId));

export const writeMove = (from: Layout, volumeId: string, intent: MoveIntent): Promise<void> =>
  writeJsonAtomic(moveIntentPath(from, volumeId), intent);
export const removeMove = (from: Layout, volumeId: string): Promise<void> => rm(moveIntentPath(from, volumeId), { force: true });

/** Past this point the target holds writes the source lacks: finish, never undo. */
export const committed = (intent: MoveIntent): boolean => intent.switching === true || intent.switched === true;
