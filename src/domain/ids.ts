/**
 * Volume and snapshot ids. An id is derived from the CreateVolume request name
 * so a retry finds its volume by stat-ing one directory per mount (ARCHITECTURE.md).
 */
import { createHash } from 'node:crypto';
import { invalid } from './errors.js';

const ID_PATTERN = /^[A-Za-z0-9._-]{1,128}$/;
/** Names that are already safe ids are used as they are: admins see pvc-… on disk. */
const READABLE_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,95}$/;

export function isValidId(id: string): boolean {
  return ID_PATTERN.test(id) && id !== '.' && id !== '..';
}

/** Rejects anything that could escape the driver tree before it reaches the filesystem. */
export function checkId(id: string, what: string): string {
  if (id === '') throw invalid(`${what} is required`);
  if (!isValidId(id)) {
    throw invalid(`${what} ${JSON.stringify(id.slice(0, 140))} is not a filedriver id (1-128 characters of A-Z a-z 0-9 . _ -)`);
  }
  return id;
}

/** Deterministic id for a request name: the name itself when safe, else a hash. */
export function idFromName(name: string): string {
  if (READABLE_NAME.test(name)) return name;
  return `h-${createHash('sha256').update(name).digest('hex').slice(0, 40)}`;
}

const MOUNT_NAME = /^[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?$/;

export function isValidMountName(name: string): boolean {
  return MOUNT_NAME.test(name);
}
