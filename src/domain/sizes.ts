/**
 * Sizes are bigint bytes everywhere: CSI carries int64 and volumes above 2^53
 * bytes must round-trip exactly (proto longs are loaded as strings).
 */
import { invalid, outOfRange } from './errors.js';

export const MiB = 1n << 20n;
export const GiB = 1n << 30n;
const INT64_MAX = (1n << 63n) - 1n;

/** Parses a proto int64 that arrived as a decimal string (or number). */
export function parseBytes(value: string | number | undefined, field: string): bigint {
  if (value === undefined || value === '') return 0n;
  const text = String(value);
  if (!/^-?\d+$/.test(text)) throw invalid(`${field} ${text} is not an integer number of bytes`);
  const n = BigInt(text);
  if (n < 0n) throw invalid(`${field} must not be negative (got ${text})`);
  if (n > INT64_MAX) throw invalid(`${field} ${text} is larger than int64`);
  return n;
}

export function roundUp(n: bigint, unit: bigint): bigint {
  return ((n + unit - 1n) / unit) * unit;
}

export interface CapacityRange {
  requiredBytes: bigint; // 0 = unset
  limitBytes: bigint; // 0 = unset
}

/**
 * The size to create for a capacity_range (CSI CreateVolume): the required size
 * rounded up to a MiB, the default when unset, and OUT_OF_RANGE when the limit
 * cannot be met.
 */
export function sizeFor(range: CapacityRange, defaultBytes: bigint, sourceBytes?: bigint): bigint {
  const { limitBytes } = range;
  // A clone is at least as big as its source (CSI: a larger size grows it after the copy).
  if (sourceBytes !== undefined && limitBytes > 0n && limitBytes < sourceBytes) {
    throw outOfRange(`limit_bytes ${limitBytes} is smaller than the source's ${sourceBytes} bytes`);
  }
  const requiredBytes = sourceBytes !== undefined && sourceBytes > range.requiredBytes ? sourceBytes : range.requiredBytes;
  if (sourceBytes !== undefined && range.requiredBytes === 0n) defaultBytes = sourceBytes;
  if (limitBytes > 0n && requiredBytes > limitBytes) {
    throw outOfRange(`required_bytes ${requiredBytes} is larger than limit_bytes ${limitBytes}`);
  }
  let size: bigint;
  if (requiredBytes > 0n) size = roundUp(requiredBytes, MiB);
  else if (limitBytes > 0n) size = limitBytes < defaultBytes ? limitBytes - (limitBytes % MiB) : defaultBytes;
  else size = defaultBytes;
  if (limitBytes > 0n && size > limitBytes) size = limitBytes - (limitBytes % MiB);
  if (size < requiredBytes || size === 0n) {
    throw outOfRange(`no whole number of MiB satisfies required_bytes ${requiredBytes} and limit_bytes ${limitBytes}`);
  }
  return size;
}

/** Whether an existing size satisfies a capacity_range (idempotent CreateVolume). */
export function fitsRange(size: bigint, range: CapacityRange): boolean {
  return size >= range.requiredBytes && (range.limitBytes === 0n || size <= range.limitBytes);
}

export function formatBytes(n: bigint): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB', 'EiB'];
  let i = 0;
  let whole = n;
  while (whole >= 1024n && i < units.length - 1 && whole % 1024n === 0n) {
    whole /= 1024n;
    i++;
  }
  return `${whole} ${units[i] ?? 'B'}`;
}
