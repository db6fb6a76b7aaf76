/**
 * Work a volume has under way — a live move, a snapshot layer waiting for its
 * node — is finished before anything else changes the volume's image:
 * growing, deleting, snapshotting or moving it acts on the right file then.
 * ABORTED while a node still has its part to do (the sidecars retry).
 */
import type { Logger } from 'pino';
import { busy } from '../domain/errors.js';
import type { FoundVolume, VolumeStore } from '../storage/volume-store.js';
import type { Layering } from './layering.js';
import type { LiveMover } from './live-move.js';

export class Settler {
  constructor(
    private readonly store: VolumeStore,
    private readonly layering: Layering,
    private readonly mover: LiveMover,
  ) {}

  /** The volume as it is once settled (a finished move puts it on another mount). */
  async settle(found: FoundVolume, log: Logger, action: string): Promise<FoundVolume> {
    if (found.record.format !== 'qcow2') return found;
    let current = await this.mover.settleArrival(found, log);
    if ((await this.mover.advance(current, log)) === 'pending') {
      throw busy(`volume ${found.record.id} cannot ${action} while it moves to another mount and its node has yet to switch; retry`);
    }
    current = (await this.store.find(found.record.id)) ?? current;
    await this.layering.settle(current, log, action);
    return current;
  }
}
