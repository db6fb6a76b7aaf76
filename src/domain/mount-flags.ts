/**
 * CSI mount_flags the node accepts. They come from a StorageClass or PV that
 * any namespace admin may write, and end up in `mount -o`: an allow-list, so
 * that `bind`, `remount`, `move` or `X-mount.mkdir` cannot turn a stage or
 * publish into another kind of mount, and checked before the node touches the
 * volume (a refused flag found by mount(8) after formatting is too late).
 * Messages name positions, never values: mount_flags may carry credentials.
 */
import { invalid } from './errors.js';

/** Per-mount and ext4/xfs options that change how, not what, is mounted. */
const PLAIN = new Set([
  'defaults',
  'ro',
  'rw',
  'atime',
  'noatime',
  'relatime',
  'norelatime',
  'strictatime',
  'nostrictatime',
  'diratime',
  'nodiratime',
  'lazytime',
  'nolazytime',
  'exec',
  'noexec',
  'suid',
  'nosuid',
  'dev',
  'nodev',
  'sync',
  'async',
  'dirsync',
  'iversion',
  'noiversion',
  'discard',
  'nodiscard',
  'barrier',
  'nobarrier',
  'nouuid',
  'noload',
  'norecovery',
  'acl',
  'noacl',
  'user_xattr',
  'nouser_xattr',
  'inode64',
  'inode32',
  'largeio',
  'nolargeio',
  'noquota',
  'quota',
  'usrquota',
  'grpquota',
  'prjquota',
  'uquota',
  'gquota',
  'pquota',
  'wsync',
  'dax',
  'nodelalloc',
  'delalloc',
  'journal_checksum',
  'nojournal_checksum',
  'auto_da_alloc',
  'noauto_da_alloc',
]);

/** Options with a value: the name before `=` must be one of these. */
const VALUED = new Set([
  'commit',
  'data',
  'errors',
  'stripe',
  'stripe_width',
  'allocsize',
  'logbufs',
  'logbsize',
  'sunit',
  'swidth',
  'max_batch_time',
  'min_batch_time',
  'journal_ioprio',
  'resuid',
  'resgid',
  'sb',
  'context',
  'fscontext',
  'defcontext',
  'rootcontext',
  'dax',
]);

/** Flags that ask for a writable mount; refused on a read-only one rather than silently dropped. */
const WRITABLE = new Set(['rw']);

export function checkMountFlags(flags: readonly string[]): void {
  const bad = flags.flatMap((f, i) => {
    const eq = f.indexOf('=');
    const ok = eq < 0 ? PLAIN.has(f) : VALUED.has(f.slice(0, eq)) && eq < f.length - 1;
    return ok ? [] : [i];
  });
  if (bad.length > 0) {
    throw invalid(
      `mount_flags ${bad.map((i) => `#${String(i + 1)}`).join(', ')} are not allowed: only options that change how a filesystem is mounted ` +
        '(noatime, nodev, nosuid, noexec, discard, data=, commit=, context=, …); never bind, remount, move or mount(8) extensions',
    );
  }
}

/** A read-only stage or publish may not carry a flag that asks for writes (CSI: readonly, *_READER_ONLY). */
export function checkReadOnlyFlags(flags: readonly string[], readOnly: boolean, what: string): void {
  if (!readOnly) return;
  const bad = flags.flatMap((f, i) => (WRITABLE.has(f) ? [i] : []));
  if (bad.length > 0) {
    throw invalid(`${what} is read-only, but mount_flags ${bad.map((i) => `#${String(i + 1)}`).join(', ')} ask for a writable mount`);
  }
}
