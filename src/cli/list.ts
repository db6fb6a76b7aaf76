/** `filedriver list`: the mounts, and the volumes and snapshots on each. */
import { invalid } from '../domain/errors.js';
import { buildContext, COMMON_HELP, COMMON_OPTIONS, humanBytes, parseCommand, say } from './context.js';
import { takeInventory, type MountInventory, type SnapshotEntry, type VolumeEntry } from './inventory.js';
import { humanAge, nodeSummaries, type NodeSummary } from './nodes.js';

const HELP = `Usage: filedriver list [--json] [mount options]

Lists each mount's state, then its volumes and snapshots: id, name, format, virtual size,
bytes allocated on the share, the snapshot backing it (linked clones), the nodes a volume is
published to, the volumes and snapshots that depend on a snapshot, and flags (hidden: deleted
but still backing a dependent; internal: a base filedriver made for a clone, golden image or
move; to-merge: hidden with one dependent, to be merged into it; not-ready: a snapshot layer
whose volume's node has yet to switch; layering, merging, moving: work under way on a volume).
A mount that is not mounted is shown without contents. Then the node plugins registered on
the mounts: last heartbeat, stale or not, the volumes staged there and the mounts each sees.

  --json            machine-readable output; sizes are exact decimal strings of bytes

${COMMON_HELP}`;

export async function listCommand(argv: string[]): Promise<number> {
  const { values, positionals } = parseCommand('list', {
    args: argv,
    options: { ...COMMON_OPTIONS, json: { type: 'boolean' } },
    strict: true,
    allowPositionals: true,
  });
  if (values.help === true) {
    say(HELP);
    return 0;
  }
  if (positionals.length > 0) throw invalid(`list takes no arguments, got ${positionals.join(' ')}`);
  const inventory = await takeInventory(buildContext(values));
  say(
    values.json === true
      ? JSON.stringify({ mounts: inventory.map(mountJson), nodes: nodeSummaries(inventory).map(nodeJson) }, null, 2)
      : text(inventory),
  );
  return 0;
}

const bytes = (n: bigint | undefined): string | null => (n === undefined ? null : n.toString());

function mountJson(m: MountInventory) {
  const h = m.health;
  return {
    name: h.name,
    path: h.path,
    mounted: h.mounted,
    usable: h.usable,
    reason: h.reason ?? null,
    freeBytes: bytes(h.freeBytes),
    totalBytes: bytes(h.totalBytes),
    volumes: m.volumes.map(volumeJson),
    snapshots: m.snapshots.map(snapshotJson),
  };
}

function volumeJson(v: VolumeEntry) {
  const r = v.record;
  return {
    id: v.id,
    name: r?.name ?? null,
    format: r?.format ?? null,
    sizeBytes: r?.sizeBytes ?? null,
    allocatedBytes: bytes(v.allocatedBytes),
    publishedTo: r?.publications.map((p) => p.node) ?? [],
    backing: r?.backing ?? null,
    pending: v.pending.map((p) => ({ kind: p.kind, detail: p.detail, since: new Date(p.sinceMs).toISOString() })),
    pvc: r?.pvc ?? null,
    createdAt: r?.createdAt ?? null,
    error: v.error ?? (r !== undefined && v.allocatedBytes === undefined ? 'image is missing' : null),
  };
}

function snapshotJson(s: SnapshotEntry) {
  const r = s.record;
  return {
    id: s.id,
    name: r?.name ?? null,
    sourceVolumeId: r?.sourceVolumeId ?? null,
    format: r?.format ?? null,
    sizeBytes: r?.sizeBytes ?? null,
    allocatedBytes: bytes(s.allocatedBytes),
    backing: r?.backing ?? null,
    dependents: s.dependents,
    hidden: r?.deleted ?? false,
    internal: r?.internal ?? false,
    ready: r?.pending !== true,
    merging: r?.deleted === true && s.dependents.length === 1,
    method: r?.method ?? null,
    createdAt: r?.createdAt ?? null,
    error: s.error ?? (r !== undefined && s.allocatedBytes === undefined ? 'image is missing' : null),
  };
}

function text(inventory: MountInventory[]): string {
  const mounts = [['MOUNT', 'PATH', 'STATE', 'FREE', 'SIZE']];
  for (const { health: h } of inventory) {
    const state = h.usable ? 'usable' : h.mounted ? `read-only or unwritable: ${h.reason ?? ''}` : `not mounted: ${h.reason ?? ''}`;
    mounts.push([h.name, h.path, state, h.usable ? humanBytes(h.freeBytes) : '-', h.usable ? humanBytes(h.totalBytes) : '-']);
  }
  const rows = [['MOUNT', 'KIND', 'ID', 'FORMAT', 'SIZE', 'ALLOCATED', 'BACKING', 'PUBLISHED-TO', 'DEPENDENTS', 'FLAGS', 'NAME']];
  for (const m of inventory) {
    for (const v of m.volumes) rows.push(volumeRow(m.health.name, v));
    for (const s of m.snapshots) rows.push(snapshotRow(m.health.name, s));
  }
  const objects = rows.length > 1 ? table(rows) : 'no volumes or snapshots';
  return `${table(mounts)}\n\n${objects}\n\n${nodesText(nodeSummaries(inventory))}`;
}

function nodeJson(n: NodeSummary) {
  const r = n.record;
  return {
    node: r.node,
    registeredOn: n.registeredOn,
    sees: r.mounts,
    staged: r.staged,
    version: r.version,
    startedAt: r.startedAt,
    heartbeatAt: r.heartbeatAt,
    stale: !n.fresh,
  };
}

function nodesText(nodes: NodeSummary[]): string {
  if (nodes.length === 0) return 'no nodes registered';
  const rows = [['NODE', 'HEARTBEAT', 'STATE', 'STAGED', 'SEES', 'VERSION']];
  for (const n of nodes)
    rows.push([
      n.record.node,
      `${humanAge(n.ageMs)} ago`,
      n.fresh ? 'fresh' : 'stale',
      list(n.record.staged),
      list(n.record.mounts),
      n.record.version || '-',
    ]);
  return table(rows);
}

const size = (text: string | null | undefined): string => (text === null || text === undefined ? '-' : humanBytes(BigInt(text)));
const list = (items: readonly string[] | undefined): string => (items === undefined || items.length === 0 ? '-' : items.join(','));
const flags = (...set: [boolean, string][]): string => list(set.filter(([on]) => on).map(([, flag]) => flag));

function volumeRow(mount: string, v: VolumeEntry): string[] {
  const r = v.record;
  const nodes = list(r?.publications.map((p) => p.node));
  const flagged = flags(
    [v.error !== undefined, 'unreadable'],
    [r !== undefined && v.allocatedBytes === undefined, 'image-missing'],
    ...v.pending.map((p): [boolean, string] => [true, p.kind === 'snapshot layer' ? 'layering' : p.kind === 'merge' ? 'merging' : 'moving']),
  );
  return [
    mount,
    'volume',
    v.id,
    r?.format ?? '-',
    size(r?.sizeBytes),
    size(bytes(v.allocatedBytes)),
    r?.backing ?? '-',
    nodes,
    '-',
    flagged,
    r?.name ?? '-',
  ];
}

function snapshotRow(mount: string, s: SnapshotEntry): string[] {
  const r = s.record;
  const flagged = flags(
    [r?.deleted === true, 'hidden'],
    [r?.internal === true, 'internal'],
    [r?.pending === true, 'not-ready'],
    [r?.deleted === true && s.dependents.length === 1, 'to-merge'],
    [s.error !== undefined, 'unreadable'],
    [r !== undefined && s.allocatedBytes === undefined, 'image-missing'],
  );
  return [
    mount,
    'snapshot',
    s.id,
    r?.format ?? '-',
    size(r?.sizeBytes),
    size(bytes(s.allocatedBytes)),
    r?.backing ?? '-',
    '-',
    list(s.dependents),
    flagged,
    r?.name ?? '-',
  ];
}

/** Columns padded to their widest cell; the last column is not padded. */
function table(rows: string[][]): string {
  const widths = rows[0]?.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length))) ?? [];
  return rows.map((r) => r.map((cell, i) => (i === r.length - 1 ? cell : cell.padEnd(widths[i] ?? 0))).join('  ')).join('\n');
}
