/**
 * The node plugin's side of the node registry (storage/nodes.ts): writes this
 * node's record on every usable share at start-up, before the CSI socket
 * serves (so NodeGetInfo → ControllerPublishVolume never meets an unregistered
 * node), and then every HEARTBEAT_MS.
 */
import { realpath } from 'node:fs/promises';
import type { Logger } from 'pino';
import { settleWithin } from '../domain/concurrency.js';
import { mountAt, readMountInfo } from '../system/mountinfo.js';
import { HEALTH_TIMEOUT_MS, type Mounts } from '../storage/mounts.js';
import { HEARTBEAT_MS, NODE_SCHEMA, writeNode, type NodeRecord } from '../storage/nodes.js';

/** How often the node looks for a share that appeared (a read of its own mountinfo). */
const LOOK_MS = 1_000;

export class NodeHeartbeat {
  private timer: NodeJS.Timeout | undefined;
  private look: NodeJS.Timeout | undefined;
  private stopped = false;
  /** Writes still running, per mount: a hung share holds one, and is skipped until it returns. */
  private readonly writing = new Map<string, Promise<unknown>>();
  private readonly startedAt = new Date().toISOString();
  private lastStaged: string[] = [];

  constructor(
    private readonly mounts: Mounts,
    private readonly nodeId: string,
    private readonly version: string,
    private readonly staged: () => Promise<string[]>,
    private readonly log: Logger,
    private readonly intervalMs = HEARTBEAT_MS,
  ) {}

  /** One heartbeat; returns the mounts written. Never writes to a share that is not usable. */
  async beat(): Promise<string[]> {
    const usable = (await this.mounts.usable()).map((h) => h.name);
    const record: NodeRecord = {
      schema: NODE_SCHEMA,
      node: this.nodeId,
      mounts: usable,
      staged: await this.readStaged(),
      version: this.version,
      startedAt: this.startedAt,
      heartbeatAt: new Date().toISOString(),
    };
    const written = await Promise.all(
      usable.map(async (name) => {
        if (this.stopped || this.writing.has(name)) return undefined;
        const write = writeNode(this.mounts.layout(name), record).then(
          () => name,
          (e: unknown) => {
            this.mounts.invalidate(name);
            this.log.warn({ mount: name, err: e }, "could not write this node's registry record");
            return undefined;
          },
        );
        this.writing.set(name, write);
        void write.finally(() => this.writing.delete(name));
        // Bounded like a health check: a share that hangs now must not hold up start-up or the next beat.
        return settleWithin(write, HEALTH_TIMEOUT_MS, () => {
          this.log.warn(
            { mount: name },
            `writing this node's registry record has not returned for ${HEALTH_TIMEOUT_MS / 1000} s: is the share hung?`,
          );
          return undefined;
        });
      }),
    );
    return written.filter((n): n is string => n !== undefined);
  }

  /** Staged volumes; when the stage records cannot be read, the last list read: the node still beats. */
  private async readStaged(): Promise<string[]> {
    try {
      this.lastStaged = [...new Set(await this.staged())].sort();
    } catch (e) {
      this.log.warn({ err: e }, "could not read this node's stage records; the registry keeps the last list read");
    }
    return this.lastStaged;
  }

  /**
   * The first beat (awaited), then one every interval on an unref'd timer —
   * and one at once when a configured share becomes a mount point (an NFS
   * mount that raced the plugin's start): the node is known there within a
   * second, not a heartbeat. The look reads the local mountinfo only.
   */
  async start(): Promise<void> {
    const written = await this.beat();
    if (written.length === 0) this.log.warn('no usable mount to register this node on; retrying with every heartbeat');
    else this.log.info({ mounts: written }, 'node registered on the shares');
    if (this.stopped) return;
    let mounted = await this.mountedNow();
    const beat = () => this.beat().catch((e: unknown) => this.log.warn({ err: e }, 'node heartbeat failed'));
    this.timer = setInterval(() => void beat(), this.intervalMs);
    this.timer.unref();
    this.look = setInterval(() => {
      void this.mountedNow().then(
        (now) => {
          const appeared = [...now].filter((m) => !mounted.has(m));
          mounted = now;
          if (appeared.length === 0 || this.stopped) return;
          for (const m of appeared) this.mounts.invalidate(m);
          this.log.info({ mounts: appeared }, 'a share appeared; registering this node on it');
          void beat();
        },
        () => undefined,
      );
    }, LOOK_MS);
    this.look.unref();
  }

  /** Configured shares whose path is a mount point now (mountinfo; nothing is written). */
  private async mountedNow(): Promise<Set<string>> {
    const table = await readMountInfo();
    const names = await Promise.all(
      this.mounts.configs.map(async (m) => {
        const real = await realpath(m.path).catch(() => undefined);
        return real !== undefined && mountAt(table, real) !== undefined ? m.name : undefined;
      }),
    );
    return new Set(names.filter((n): n is string => n !== undefined));
  }

  /** No beat starts after this. The record stays: a restarting node is still a known node. */
  stop(): void {
    this.stopped = true;
    if (this.timer !== undefined) clearInterval(this.timer);
    if (this.look !== undefined) clearInterval(this.look);
    this.timer = undefined;
    this.look = undefined;
  }
}
