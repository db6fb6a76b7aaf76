/**
 * In-process locks keyed by volume id, name or path. A busy key is answered
 * with ABORTED (CSI: an operation is pending for this volume) so the sidecar
 * retries later. In-process suffices: the controller runs as one
 * leader-elected replica, and each node plugin owns its node.
 */
import { busy } from './errors.js';

export class KeyedLocks {
  private readonly held = new Set<string>();

  /** Takes every key or none; returns the release function. */
  acquire(keys: readonly string[]): () => void {
    const taken = keys.find((k) => this.held.has(k));
    if (taken !== undefined) throw busy(`an operation on ${taken} is already in progress; retry`);
    for (const k of keys) this.held.add(k);
    return () => {
      for (const k of keys) this.held.delete(k);
    };
  }

  get size(): number {
    return this.held.size;
  }
}
