/**
 * Room on the mounts, claimed one request at a time: choosing a mount (or
 * checking a mount can take a volume's growth) and reserving those bytes in
 * the ledger happen together, so concurrent CreateVolume or
 * ControllerExpandVolume calls cannot all be given the same room. In-process
 * suffices: the controller runs as one leader-elected replica. A reservation
 * counts until its release, called once the volume is recorded or failed.
 */
import { Serial } from '../domain/concurrency.js';
import { exhausted } from '../domain/errors.js';
import { place, roomFor, type Segment } from '../domain/placement.js';
import { formatBytes } from '../domain/sizes.js';
import type { Ledger } from '../storage/ledger.js';
import type { Mounts } from '../storage/mounts.js';
import { roomsOf } from './rooms.js';

export interface Claim {
  /** The volume, for messages and as the reservation's key. */
  id: string;
  name: string;
  sizeBytes: bigint;
  thin: boolean;
  /** Mounts allowed (StorageClass `mounts`, or a linked clone's base mount); undefined = all. */
  allowed: readonly string[] | undefined;
  requisite: readonly Segment[];
  preferred: readonly Segment[];
}

export interface Reserved {
  mount: string;
  release: () => void;
}

export class Placer {
  /** One placement decision at a time (in-process: the controller is one replica). */
  private readonly turns = new Serial();

  constructor(
    private readonly mounts: Mounts,
    private readonly ledger: Ledger,
    private readonly overSubscription: number,
    private readonly keyOf: (mount: string) => string,
  ) {}

  /** The mount with most room for a new volume, its size reserved there; RESOURCE_EXHAUSTED saying why per mount. */
  claim(c: Claim): Promise<Reserved> {
    return this.serially(async () => {
      const placement = place(await roomsOf(this.mounts, this.ledger), { ...c, ratio: this.overSubscription, keyOf: this.keyOf });
      if (placement.mount === undefined) {
        throw exhausted(`no mount can hold volume ${c.name} of ${formatBytes(c.sizeBytes)}: ${placement.reasons.join('; ')}`);
      }
      return { mount: placement.mount, release: this.ledger.reserve(placement.mount, c.id, c.sizeBytes, !c.thin) };
    });
  }

  /** `growth` more bytes for volume `id` on `mount`, reserved; RESOURCE_EXHAUSTED when the mount has no such room. */
  grow(mount: string, id: string, growth: bigint, thin: boolean): Promise<() => void> {
    // Keyed apart from the volume itself, which the ledger already counts at its old size.
    return this.reserveOn(mount, `${id}#growth`, growth, thin, `mount ${mount} has no room to grow volume ${id} by ${formatBytes(growth)}`);
  }

  /** Room on `mount` for a flattened copy of volume `id` (a move between mounts), reserved. */
  copyTo(mount: string, id: string, sizeBytes: bigint): Promise<() => void> {
    return this.reserveOn(mount, `${id}#copy`, sizeBytes, false, `mount ${mount} has no room for volume ${id} (${formatBytes(sizeBytes)})`);
  }

  private reserveOn(mount: string, key: string, bytes: bigint, thin: boolean, refusal: string): Promise<() => void> {
    return this.serially(async () => {
      const room = (await roomsOf(this.mounts, this.ledger)).find((r) => r.name === mount);
      if (room === undefined || roomFor(room, thin, this.overSubscription) < bytes) throw exhausted(refusal);
      return this.ledger.reserve(mount, key, bytes, !thin);
    });
  }

  private serially<T>(fn: () => Promise<T>): Promise<T> {
    return this.turns.run('placement', fn);
  }
}
