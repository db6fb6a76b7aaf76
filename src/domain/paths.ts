/** Paths kubelet hands the node service: checked before anything touches them. */
import { isAbsolute, normalize, sep } from 'node:path';
import { invalid } from './errors.js';

/**
 * A path from kubelet, cleaned: `outside` says why it does not lie strictly
 * inside `root` (the kubelet directory). Empty, NUL and `..` are malformed
 * whatever the call, and throw INVALID_ARGUMENT.
 */
export function kubeletPath(path: string | undefined, field: string, root: string): { clean: string; outside?: string } {
  if (path === undefined || path === '') throw invalid(`${field} is required`);
  if (path.includes('\0')) throw invalid(`${field} contains a NUL byte`);
  if (path.split('/').includes('..')) throw invalid(`${field} ${path} must not contain ..`);
  if (!isAbsolute(path)) return { clean: path, outside: `${field} ${path} must be an absolute path` };
  const clean = normalize(path).replace(/\/+$/, '');
  const base = normalize(root).replace(/\/+$/, '');
  if (!clean.startsWith(base + sep) || clean === base) return { clean, outside: `${field} ${path} is outside the kubelet directory ${base}` };
  return { clean };
}

/** An absolute, normalised path strictly inside `root` (the kubelet directory); INVALID_ARGUMENT otherwise. */
export function checkKubeletPath(path: string | undefined, field: string, root: string): string {
  const { clean, outside } = kubeletPath(path, field, root);
  if (outside !== undefined) throw invalid(outside);
  return clean;
}

/** Whether two clean absolute paths are the same or one lies inside the other. */
export function overlaps(a: string, b: string): boolean {
  return a === b || a.startsWith(b + sep) || b.startsWith(a + sep);
}
