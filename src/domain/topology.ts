/** One topology key per mount: nodes that see the mount carry it (ARCHITECTURE.md). */
export function topologyKey(driverName: string, mount: string): string {
  return `${driverName}/mount-${mount}`;
}

/** The mount names a topology segment stands for. */
export function mountsInSegment(driverName: string, segment: Record<string, string>): string[] {
  const prefix = `${driverName}/mount-`;
  return Object.entries(segment)
    .filter(([k, v]) => k.startsWith(prefix) && v === 'true')
    .map(([k]) => k.slice(prefix.length));
}
