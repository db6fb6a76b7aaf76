/**
 * Prometheus metrics (prom-client) and the small HTTP server that serves them
 * beside /healthz. RPC figures come from handle.ts's observer as calls finish;
 * mount figures are read when Prometheus scrapes, from the same cached mount
 * health the RPCs use plus one readdir per mounted share, so a scrape never
 * spawns a process or walks a volume tree.
 */
import { readdir } from 'node:fs/promises';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Logger } from 'pino';
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { ListenAddress } from './config.js';
import type { RpcObserver } from './csi/handle.js';
import type { Mounts } from './storage/mounts.js';
import { readNodes, sighting } from './storage/nodes.js';

/** Told of each step of the layer machinery: what it was and how it ended. */
export type LayerEvents = (operation: string, outcome: 'done' | 'waiting' | 'failed') => void;

// From a cached Probe (1 ms) to a full copy of a large image (an hour).
const BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800, 3600];

export class Metrics {
  readonly registry = new Registry();
  private readonly rpcs = new Counter({
    name: 'filedriver_rpc_requests_total',
    help: 'CSI calls answered, by method and gRPC status',
    labelNames: ['method', 'code'] as const,
    registers: [this.registry],
  });
  private readonly latency = new Histogram({
    name: 'filedriver_rpc_duration_seconds',
    help: 'Time to answer a CSI call, by method and gRPC status',
    labelNames: ['method', 'code'] as const,
    buckets: BUCKETS,
    registers: [this.registry],
  });
  private readonly attaches = new Counter({
    name: 'filedriver_attach_total',
    help: 'Successful NodeStageVolume calls: an image attached (loop device, export, mount) on this node',
    registers: [this.registry],
  });
  private readonly detaches = new Counter({
    name: 'filedriver_detach_total',
    help: 'Successful NodeUnstageVolume calls: an image detached from this node',
    registers: [this.registry],
  });
  private readonly usable = this.mountGauge('filedriver_mount_usable', '1 while the mount is mounted and writable, else 0');
  private readonly free = this.mountGauge('filedriver_mount_free_bytes', 'Bytes available on a usable mount (statfs)');
  private readonly used = this.mountGauge('filedriver_mount_used_bytes', 'Bytes in use on a usable mount: size minus available');
  private readonly volumes = this.mountGauge('filedriver_volumes', 'Volumes on a mounted share');
  private readonly snapshots = this.mountGauge(
    'filedriver_snapshots',
    'Snapshot directories on a mounted share, including hidden bases kept alive by clones',
  );
  private readonly nodes = this.mountGauge('filedriver_nodes', 'Node plugins registered on a mounted share with a fresh heartbeat');

  private readonly layerOps = new Counter({
    name: 'filedriver_layer_operations_total',
    help: 'Snapshot layers, merges and live moves, by step and outcome (done, waiting for a node or lock, failed)',
    labelNames: ['operation', 'outcome'] as const,
    registers: [this.registry],
  });
  private readonly mergesWaiting = new Gauge({
    name: 'filedriver_merges_waiting',
    help: 'Deleted snapshot layers waiting to be merged (for a node, a lock, or the volume to be detached or snapshotted)',
    registers: [this.registry],
  });

  private readonly dataPlane = new Gauge({
    name: 'filedriver_data_plane_info',
    help: "The node's data plane (one qemu-storage-daemon for the qcow2 volumes): 1 while it answers, with its qemu version and how volumes reach their pods",
    labelNames: ['qemu', 'path'] as const,
    registers: [this.registry],
  });
  private lookPlane: () => Promise<{ qemu: string; path: string } | undefined> = () => Promise.resolve(undefined);

  /** The node's data plane, looked at (never started) at each scrape. */
  watchDataPlane(look: () => Promise<{ qemu: string; path: string } | undefined>): void {
    this.lookPlane = look;
  }

  /**
   * `countNodes`: only the controller reports filedriver_nodes. On every node it would read every
   * node's record from every share at each scrape, which grows with the square of the cluster.
   */
  constructor(
    private readonly mounts: Mounts,
    private readonly countNodes = true,
  ) {
    collectDefaultMetrics({ register: this.registry });
  }

  /** For makeHandle: counts and times every call, and attach/detach on success. */
  readonly observe: RpcObserver = (method, code, seconds) => {
    this.rpcs.inc({ method, code });
    this.latency.observe({ method, code }, seconds);
    if (code !== 'OK') return;
    if (method === 'NodeStageVolume') this.attaches.inc();
    else if (method === 'NodeUnstageVolume') this.detaches.inc();
  };

  /** For the layer machinery (controller/layering, merger, live-move; node/layers). */
  readonly layerEvent: LayerEvents = (operation, outcome) => this.layerOps.inc({ operation, outcome });

  /** How many merges wait, read at scrape time. */
  watchMerges(waiting: () => number): void {
    this.waitingMerges = waiting;
  }
  private waitingMerges: () => number = () => 0;

  /** The exposition text, with the mount gauges read now. */
  async render(): Promise<string> {
    await this.readMounts();
    this.mergesWaiting.set(this.waitingMerges());
    const plane = await this.lookPlane().catch(() => undefined);
    this.dataPlane.reset();
    if (plane !== undefined) this.dataPlane.set(plane, 1);
    return this.registry.metrics();
  }

  private mountGauge(name: string, help: string): Gauge<'mount'> {
    return new Gauge({ name, help, labelNames: ['mount'] as const, registers: [this.registry] });
  }

  // Read before rendering rather than in each gauge's collect(): prom-client
  // collects gauges concurrently, and all of them should come from one reading.
  private async readMounts(): Promise<void> {
    const healths = await this.mounts.all();
    const counts = await Promise.all(
      healths.map(async (h) => {
        // An unmounted share is an empty local directory: no count rather than a false 0.
        if (!h.mounted) return undefined;
        const layout = this.mounts.layout(h.name);
        const now = Date.now();
        const nodes = this.countNodes
          ? (await readNodes(layout)).filter((e) => e.record !== undefined && sighting(h.name, e.record, now).fresh).length
          : undefined;
        return { volumes: await countEntries(layout.volumes), snapshots: await countEntries(layout.snapshots), nodes };
      }),
    );
    for (const g of [this.usable, this.free, this.used, this.volumes, this.snapshots, this.nodes]) g.reset();
    healths.forEach((h, i) => {
      const mount = h.name;
      this.usable.set({ mount }, h.usable ? 1 : 0);
      if (h.usable) {
        this.free.set({ mount }, Number(h.freeBytes));
        this.used.set({ mount }, Number(h.totalBytes - h.freeBytes));
      }
      const c = counts[i];
      if (c?.volumes !== undefined) this.volumes.set({ mount }, c.volumes);
      if (c?.snapshots !== undefined) this.snapshots.set({ mount }, c.snapshots);
      if (c?.nodes !== undefined) this.nodes.set({ mount }, c.nodes);
    });
  }
}

async function countEntries(dir: string): Promise<number | undefined> {
  try {
    return (await readdir(dir)).length;
  } catch {
    return undefined; // not created yet (read-only share) or unreadable: unknown, not 0
  }
}

export interface MetricsServer {
  /** The address actually bound (the chosen port when 0 was asked). */
  address: ListenAddress;
  close(): Promise<void>;
}

/**
 * Serves GET /metrics and GET /healthz. /healthz is readiness: 200 while the tools
 * run and, for the controller, a mount is usable; else 503. (Liveness is the CSI
 * Probe through the livenessprobe sidecar: it only asks whether the process answers.)
 */
export async function startMetricsServer(
  at: ListenAddress,
  metrics: Metrics,
  ready: (log: Logger) => Promise<boolean>,
  log: Logger,
): Promise<MetricsServer> {
  const answer = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    const path = (req.url ?? '/').split('?')[0];
    if (req.method !== 'GET' && req.method !== 'HEAD') return send(res, 405, 'text/plain', 'only GET\n');
    if (path === '/metrics') return send(res, 200, metrics.registry.contentType, await metrics.render());
    if (path === '/healthz') {
      const ok = await ready(log);
      return send(res, ok ? 200 : 503, 'text/plain', ok ? 'ok\n' : 'not ready: no usable mount or qemu-img does not run\n');
    }
    return send(res, 404, 'text/plain', 'not found: try /metrics or /healthz\n');
  };
  const server = createServer((req, res) => {
    answer(req, res).catch((e: unknown) => {
      log.error({ err: e, url: req.url }, 'metrics request failed');
      if (!res.headersSent) send(res, 500, 'text/plain', 'internal error\n');
      else res.destroy();
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    // An empty host listens on every interface (IPv6 and IPv4 where available).
    server.listen(at.port, at.host === '' ? undefined : at.host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const bound = server.address() as AddressInfo;
  const address = { host: at.host, port: bound.port };
  log.info({ metricsAddress: `${at.host.includes(':') ? `[${at.host}]` : at.host}:${bound.port}` }, 'serving metrics');
  return {
    address,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

function send(res: ServerResponse, status: number, type: string, body: string): void {
  res.writeHead(status, { 'content-type': type, 'content-length': Buffer.byteLength(body) });
  res.end(res.req.method === 'HEAD' ? undefined : body);
}
