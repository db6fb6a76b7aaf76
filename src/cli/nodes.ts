/**
 * The node registry (storage/nodes.ts) in the admin commands: `list` shows each
 * node once, from its newest record; `doctor` reports stale records and with
 * --fix removes those silent for a day (FORGET_MS).
 */
import { forgetNode, FORGET_MS, sighting, type NodeRecord } from '../storage/nodes.js';
import type { Finding } from './checks.js';
import type { MountInventory } from './inventory.js';

export interface NodeSummary {
  record: NodeRecord;
  /** Mounts holding a record of the node. */
  registeredOn: string[];
  ageMs: number;
  fresh: boolean;
}

/** Each node once, with its newest heartbeat across the mounts, by id. */
export function nodeSummaries(inventory: MountInventory[], now = Date.now()): NodeSummary[] {
  const byNode = new Map<string, NodeSummary>();
  for (const m of inventory) {
    for (const { record } of m.nodes) {
      if (record === undefined) continue;
      const seen = sighting(m.health.name, record, now);
      const known = byNode.get(record.node);
      const on = [...(known?.registeredOn ?? []), m.health.name];
      const newest = known === undefined || seen.ageMs < known.ageMs ? { record, ageMs: seen.ageMs, fresh: seen.fresh } : known;
      byNode.set(record.node, { ...newest, registeredOn: on });
    }
  }
  return [...byNode.values()].sort((a, b) => a.record.node.localeCompare(b.record.node));
}

/** "12s", "5m", "3h", "2d". */
export function humanAge(ms: number): string {
  if (!Number.isFinite(ms)) return 'never';
  const s = Math.max(0, Math.round(ms / 1000));
  if (s < 120) return `${s}s`;
  if (s < 7200) return `${Math.round(s / 60)}m`;
  if (s < 172_800) return `${Math.round(s / 3600)}h`;
  return `${Math.round(s / 86_400)}d`;
}

export async function checkNodes(m: MountInventory, fix: boolean, now = Date.now()): Promise<Finding[]> {
  const findings: Finding[] = [];
  let fresh = 0;
  for (const e of m.nodes) {
    const subject = `${m.health.name}: nodes/${e.file}`;
    if (e.record === undefined) {
      findings.push({
        check: 'node',
        subject,
        status: 'problem',
        message: `not a node record (${e.error ?? 'unreadable'}); remove it by hand if no node rewrites it`,
      });
      continue;
    }
    const s = sighting(m.health.name, e.record, now);
    if (s.fresh) {
      fresh++;
      continue;
    }
    const silent = `node ${e.record.node}: no heartbeat for ${humanAge(s.ageMs)}`;
    const staged = e.record.staged.length > 0 ? `; it had ${e.record.staged.join(', ')} staged` : '';
    if (s.ageMs <= FORGET_MS) {
      findings.push({ check: 'node', subject, status: 'note', message: `${silent} (down, or its plugin stopped)${staged}` });
    } else if (fix && m.health.usable && (await forgetNode(m.layout, e.record.node, FORGET_MS, now))) {
      findings.push({ check: 'node', subject, status: 'fixed', message: `${silent}: record removed${staged}` });
    } else {
      findings.push({
        check: 'node',
        subject,
        status: 'problem',
        message: `${silent}: a node that is gone; doctor --fix removes its record${staged}`,
      });
    }
  }
  if (fresh > 0)
    findings.push({ check: 'node', subject: m.health.name, status: 'ok', message: `${fresh} node(s) registered with a fresh heartbeat` });
  return findings;
}
