/**
 * The node registry, kept on the shares themselves: each node plugin writes
 * `filedriver/nodes/<node>.json` on every usable share it sees, and rewrites it
 * every HEARTBEAT_MS (node/heartbeat.ts). The shares are the driver's only state and the only thing
 * the controller and every node have in common (CSI gives the controller no way
 * to reach a node), so the registry lives there too: a share a node writes to
 * is one it sees, and a record on the volume's own share says the node can
 * reach the volume. The controller reads records; only `doctor --fix` removes them.
 */
import { mkdir, readdir, readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, internal, unavailable } from '../domain/errors.js';
import { idFromName } from '../domain/ids.js';
import type { Layout } from './layout.js';
import type { Mounts } from './mounts.js';
import { readText, writeJsonAtomic } from './records.js';

export const NODE_SCHEMA = 1;
/**
 * How often a node plugin rewrites its record. Each beat is one small atomic
 * write (create, fsync, rename) per share per node: 500 nodes make 50 a second
 * on each share, small beside volume I/O; `staged` lags a stage or unstage by
 * at most this.
 */
export const HEARTBEAT_MS = 10_000;
/**
 * A record is stale after three missed beats: one slow write (a busy filer, a
 * health check that hit its 5 s bound) must not make a live node look gone.
 * Ages compare the node's clock with the reader's: nodes run NTP (Kubernetes
 * needs it for certificates and leases), and skew is far below this bound.
 */
export const STALE_MS = 3 * HEARTBEAT_MS;
/**
 * A record silent this long belongs to a node that is gone (or whose plugin was
 * removed): `doctor --fix` deletes it. Stale but younger records stay: a node
 * that is merely down is still one Kubernetes may publish to or unpublish from.
 */
export const FORGET_MS = 24 * 3600_000;

export interface NodeRecord {
  schema: number;
  /** The node id as NodeGetInfo reports it (the Kubernetes node name). */
  node: string;
  /** Mounts the node found usable at its last beat. */
  mounts: string[];
  /** Volumes with a stage record on the node (staged, or being staged). */
  staged: string[];
  version: string;
  startedAt: string;
  heartbeatAt: string;
}

/** One node's record as read from one mount. */
export interface NodeSighting {
  mount: string;
  record: NodeRecord;
  /** Since the last heartbeat (negative when the node's clock is ahead). */
  ageMs: number;
  fresh: boolean;
}

export const nodesDir = (layout: Layout): string => join(layout.root, 'nodes');

/** Node names are DNS subdomains, so mostly their own file name; anything else is hashed (as ids are). */
export const nodeFile = (layout: Layout, nodeId: string): string => join(nodesDir(layout), `${idFromName(nodeId)}.json`);

export function sighting(mount: string, record: NodeRecord, now: number): NodeSighting {
  const at = Date.parse(record.heartbeatAt);
  const ageMs = Number.isNaN(at) ? Number.POSITIVE_INFINITY : now - at;
  return { mount, record, ageMs, fresh: ageMs < STALE_MS };
}

function parse(text: string, path: string): NodeRecord {
  let r: Partial<NodeRecord>;
  try {
    r = JSON.parse(text) as Partial<NodeRecord>;
  } catch (e) {
    throw internal(`${path} is not valid JSON (${describe(e)}); the node rewrites it at its next heartbeat`);
  }
  if (typeof r.node !== 'string' || typeof r.heartbeatAt !== 'string') throw internal(`${path} is not a node record (no node or heartbeatAt)`);
  const strings = (v: unknown): string[] => (Array.isArray(v) ? v.filter((x): x is string => typeof x === 'string') : []);
  return {
    schema: r.schema ?? NODE_SCHEMA,
    node: r.node,
    mounts: strings(r.mounts),
    staged: strings(r.staged),
    version: r.version ?? '',
    startedAt: r.startedAt ?? '',
    heartbeatAt: r.heartbeatAt,
  };
}

/** The node's record on one mount; undefined when it has none there. */
export async function readNode(layout: Layout, nodeId: string): Promise<NodeRecord | undefined> {
  const path = nodeFile(layout, nodeId);
  const text = await readText(path);
  if (text === undefined) return undefined;
  const record = parse(text, path);
  // A hashed file name could in theory be another id's: the record's own id decides.
  return record.node === nodeId ? record : undefined;
}

export interface NodeEntry {
  file: string;
  record: NodeRecord | undefined;
  /** Why the file could not be read as a node record. */
  error: string | undefined;
}

/** Every node record on one mount (temp files of writes in progress skipped). */
export async function readNodes(layout: Layout): Promise<NodeEntry[]> {
  const dir = nodesDir(layout);
  const files = (await readdir(dir).catch(() => [] as string[])).filter((f) => f.endsWith('.json') && !f.startsWith('.'));
  const entries = await Promise.all(
    files.map(async (file): Promise<NodeEntry | undefined> => {
      try {
        return { file, record: parse(await readFile(join(dir, file), 'utf8'), join(dir, file)), error: undefined };
      } catch (e) {
        // Removed between readdir and read: not an entry.
        if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
        return { file, record: undefined, error: describe(e) };
      }
    }),
  );
  return entries.filter((e): e is NodeEntry => e !== undefined);
}

/** Writes a record (the node's heartbeat; tests register nodes with it too). */
export async function writeNode(layout: Layout, record: NodeRecord): Promise<void> {
  // Not recursive: the driver tree exists on a usable share (the health probe made it). If it
  // does not, the share was unmounted since that check, and nothing may appear in the bare mountpoint.
  await mkdir(nodesDir(layout)).catch((e: unknown) => {
    if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
  });
  await writeJsonAtomic(nodeFile(layout, record.node), record);
}

/**
 * Removes a record that is still older than `olderThanMs` (re-read first: the
 * node may have come back). Returns whether it removed it.
 */
export async function forgetNode(layout: Layout, nodeId: string, olderThanMs: number, now = Date.now()): Promise<boolean> {
  const record = await readNode(layout, nodeId);
  if (record === undefined || sighting('', record, now).ageMs <= olderThanMs) return false;
  await rm(nodeFile(layout, nodeId), { force: true });
  return true;
}

/** What the controller asks of the registry; a fake is a Map. */
export interface NodeRegistry {
  /**
   * The node's records, from `first` (the volume's mount) when it has one there, else from
   * every mounted share; undefined when none has one. UNAVAILABLE rather than undefined
   * while a share that could hold it cannot be read: never "unknown" from a partial view.
   */
  lookup(nodeId: string, first?: string): Promise<NodeSighting[] | undefined>;
  /** Nodes whose fresh record lists the volume as staged, read from `scope` (default: every mount). */
  holders(volumeId: string, scope?: readonly string[]): Promise<string[]>;
}

export class ShareNodeRegistry implements NodeRegistry {
  constructor(
    private readonly mounts: Mounts,
    private readonly now: () => number = Date.now,
  ) {}

  async lookup(nodeId: string, first?: string): Promise<NodeSighting[] | undefined> {
    // The volume's mount alone answers for a node registered there: other shares are not touched.
    const firstRead = first !== undefined && this.mounts.has(first) && (await this.mounts.health(first)).mounted;
    if (firstRead) {
      const record = await readNode(this.mounts.layout(first), nodeId);
      if (record !== undefined) return [sighting(first, record, this.now())];
    }
    const health = await this.mounts.all();
    const found = await Promise.all(
      health
        .filter((h) => h.mounted && !(firstRead && h.name === first))
        .map(async (h) => {
          const record = await readNode(this.mounts.layout(h.name), nodeId);
          return record === undefined ? undefined : sighting(h.name, record, this.now());
        }),
    );
    const hits = found.filter((s): s is NodeSighting => s !== undefined);
    if (hits.length > 0) return hits;
    this.requireAllMounted(health, `node ${nodeId} is not registered on any reachable mount`);
    return undefined;
  }

  async holders(volumeId: string, scope?: readonly string[]): Promise<string[]> {
    const health = (await this.mounts.all()).filter((h) => scope === undefined || scope.includes(h.name));
    this.requireAllMounted(health, `cannot tell which nodes hold volume ${volumeId}`);
    const now = this.now();
    const holders = new Set<string>();
    for (const entries of await Promise.all(health.map((h) => readNodes(this.mounts.layout(h.name))))) {
      for (const { record } of entries) {
        if (record !== undefined && sighting('', record, now).fresh && record.staged.includes(volumeId)) holders.add(record.node);
      }
    }
    return [...holders].sort();
  }

  private requireAllMounted(health: { name: string; mounted: boolean; reason: string | undefined }[], what: string): void {
    const down = health.filter((h) => !h.mounted);
    if (down.length === 0) return;
    throw unavailable(
      `${what}, and mount(s) ${down.map((h) => `${h.name} (${h.reason ?? 'unusable'})`).join(', ')} cannot be checked; retry when they are back`,
    );
  }
}
