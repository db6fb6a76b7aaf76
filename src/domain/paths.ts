/** Paths kubelet hands the node service: checked before anything touches them. */
import { isAbsolute, normalize, sep } from 'node:path';
import { invalid } from './errors.js';

/** An absolute, normalised path strictly inside `root` (the kubelet directory). */
export function checkKubeletPath(path: string | undefined, field: string, root: string): string {
  if (path === undefined || path === '') throw invalid(`${field} is required`);
  if (path.includes('\0')) throw invalid(`${field} contains a NUL byte`);
  if (!isAbsolute(path)) throw invalid(`${field} ${path} must be an absolute path`);
  if (path.split('/').includes('..')) throw invalid(`${field} ${path} must not contain ..`);
  const clean = normalize(path).replace(/\/+$/, '');
  const base = normalize(root).replace(/\/+$/, '');
  if (!clean.startsWith(base + sep) || clean === base) {
    throw invalid(`${field} ${path} is outside the kubelet directory ${base}`);
  }
  return clean;
}

/** Whether two clean absolute paths are the same or one lies inside the other. */
export function overlaps(a: string, b: string): boolean {
  return a === b || a.startsWith(b + sep) || b.startsWith(a + sep);
}
