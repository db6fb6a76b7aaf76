/**
 * Results: each figure with the floor it is compared to (measured in the same
 * run), the ratio, and the target it is held against. Printed as a table and
 * written as JSON.
 */
import { readFileSync } from 'node:fs';
import { cpus, loadavg, release, totalmem } from 'node:os';
import { qemu as qemuSource, sh } from './sh.js';

export type Unit = 'µs' | 'ms' | 's' | 'MiB/s' | 'IOPS' | 'MiB' | 'x' | 'ops/s' | 'spawns';

export interface Target {
  /** e.g. "ratio ≤ 1.20", "p50 < 2 ms" */
  text: string;
  met: boolean;
}

export interface Row {
  item: number;
  key: string;
  label: string;
  unit: Unit;
  value: number;
  floor: number | null;
  floorLabel: string;
  /** value / floor (for times: how many floors the driver takes; for throughput: the share of the floor reached). */
  ratio: number | null;
  target?: Target;
  runs: number;
  samples: number;
  note?: string;
  /** Per-run figures, for the JSON. */
  detail?: unknown;
}

export class Results {
  readonly rows: Row[] = [];
  readonly notes: string[] = [];
  readonly probes: Record<string, unknown> = {};

  add(row: Omit<Row, 'ratio'> & { ratio?: number | null }): Row {
    const ratio = row.ratio !== undefined ? row.ratio : row.floor === null || row.floor === 0 ? null : row.value / row.floor;
    const full: Row = { ...row, ratio };
    this.rows.push(full);
    return full;
  }

  note(text: string): void {
    this.notes.push(text);
  }
}

export function fmt(n: number | null, unit?: Unit): string {
  if (n === null || Number.isNaN(n)) return '—';
  const digits = Math.abs(n) >= 100 ? 0 : Math.abs(n) >= 10 ? 1 : Math.abs(n) >= 1 ? 2 : 3;
  const s = n.toFixed(digits);
  return unit === undefined ? s : `${s} ${unit}`;
}

export function table(rows: readonly Row[]): string {
  const lines = ['| # | measurement | driver | floor | ratio | target | | notes |', '|---|---|---|---|---|---|---|---|'];
  for (const r of rows) {
    const floor = r.floor === null ? r.floorLabel : `${fmt(r.floor, r.unit)} (${r.floorLabel})`;
    const verdict = r.target === undefined ? '' : r.target.met ? 'met' : '**missed**';
    const value = r.unit === 'spawns' ? String(r.value) : fmt(r.value, r.unit);
    const floorText = r.unit === 'spawns' && r.floor !== null ? `${r.floor} (${r.floorLabel})` : floor;
    lines.push(`| ${r.item} | ${r.label} | ${value} | ${floorText} | ${fmt(r.ratio)} | ${r.target?.text ?? ''} | ${verdict} | ${r.note ?? ''} |`);
  }
  return lines.join('\n');
}

export interface Machine {
  cpu: string;
  cores: number;
  memoryGiB: number;
  kernel: string;
  os: string;
  node: string;
  qemu: string;
  hostFs: string;
  shares: string;
  /** 1-minute load average when the run started and when it ended: other work on the machine shows here. */
  load: { start: number; end: number };
}

export async function machine(base: string): Promise<Machine> {
  const osRelease = readFileSync('/etc/os-release', 'utf8');
  const pretty = /^PRETTY_NAME="?([^"\n]*)"?/m.exec(osRelease)?.[1] ?? 'unknown';
  const version = (await sh(['qemu-img', '--version'])).stdout.split('\n')[0] ?? '';
  const qemu = `${version} (${qemuSource.source === 'system' ? "the system's" : qemuSource.source})`;
  const df = (await sh(['df', '--output=fstype,source', base])).stdout.trim().split('\n')[1]?.trim().replace(/\s+/, ' on ') ?? '';
  return {
    cpu: cpus()[0]?.model ?? 'unknown',
    cores: cpus().length,
    memoryGiB: Math.round(totalmem() / 2 ** 30),
    kernel: release(),
    os: pretty,
    node: process.version,
    qemu,
    hostFs: df,
    shares: '',
    load: { start: Number.NaN, end: loadavg()[0] ?? Number.NaN },
  };
}
