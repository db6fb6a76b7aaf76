/** Reading blkid's and wipefs's answers (util-linux 2.38 output formats). */
export type Probe =
  | { kind: 'blank' }
  | { kind: 'filesystem'; fsType: string }
  /** Anything else (swap, LUKS, RAID member, partition table, two signatures …): never formatted over. */
  | { kind: 'other'; description: string };

/** `blkid -o export` lines (KEY=value) into a record. */
export function parseBlkidExport(stdout: string): Record<string, string> {
  const fields: Record<string, string> = {};
  for (const line of stdout.split('\n')) {
    const eq = line.indexOf('=');
    if (eq > 0) fields[line.slice(0, eq).trim()] = line.slice(eq + 1).trim();
  }
  return fields;
}

/** What blkid found, as a Probe. Only USAGE=filesystem with a TYPE counts as a filesystem. */
export function classifyBlkid(fields: Record<string, string>): Probe {
  const type = fields['TYPE'];
  if (fields['USAGE'] === 'filesystem' && type !== undefined) return { kind: 'filesystem', fsType: type };
  const parts: string[] = [];
  if (type !== undefined) parts.push(`${type} (${fields['USAGE'] ?? 'unknown usage'})`);
  if (fields['PTTYPE'] !== undefined) parts.push(`partition table ${fields['PTTYPE']}`);
  return { kind: 'other', description: parts.join(', ') || 'unrecognised signature' };
}

export interface Signature {
  type: string;
  offset: string;
}

/** `wipefs --no-act --json`; older versions print nothing when there are no signatures. */
export function parseWipefs(stdout: string): Signature[] {
  if (stdout.trim() === '') return [];
  const data = JSON.parse(stdout) as { signatures?: { type?: string; offset?: string }[] };
  return (data.signatures ?? []).map((s) => ({ type: s.type ?? 'unknown', offset: s.offset ?? '?' }));
}

export const describeSignatures = (sigs: readonly Signature[]): string => sigs.map((s) => `${s.type} at ${s.offset}`).join(', ');
