/**
 * The one place where "the share went away under us" becomes UNAVAILABLE
 * (retry later) instead of INTERNAL: an NFS server gone (ESTALE, EIO), a dead
 * FUSE or network mount (ENOTCONN), or a file under a mount's driver tree that
 * vanished (ENOENT) while a fresh health check finds the mount no longer
 * mounted or writable. The same from a tool, read from its stderr, when its
 * argv names a path on a mount. Called by the RPC handle for every failure.
 */
import { describe, isDriverError, unavailable } from '../domain/errors.js';
import { CommandFailed } from '../system/command.js';
import { Layout } from './layout.js';
import type { Mounts } from './mounts.js';

const GONE = new Set(['ESTALE', 'ENOTCONN', 'EIO']);
const GONE_TEXT = /Stale file handle|Transport endpoint is not connected|Input\/output error/;
const MISSING_TEXT = /No such file or directory/;

export async function whenShareGone(e: unknown, mounts: Mounts): Promise<unknown> {
  if (isDriverError(e)) return e;
  const { code, paths } = facts(e);
  if (code === undefined) return e;
  for (const m of mounts.configs) {
    const on = (p: string) => p === m.path || p.startsWith(`${m.path}/`);
    const hit = paths.find(on);
    if (hit === undefined) continue;
    if (GONE.has(code)) {
      mounts.invalidate(m.name);
      return unavailable(`mount ${m.name} (${m.path}) failed under ${hit}: ${describe(e)}; retry when the share is back`);
    }
    const tree = new Layout(m.path).root;
    if (code === 'ENOENT' && (hit === tree || hit.startsWith(`${tree}/`))) {
      const h = await mounts.fresh(m.name);
      if (!h.usable)
        return unavailable(
          `mount ${m.name} (${m.path}) went away during the call (${h.reason ?? 'unusable'}): ${describe(e)}; retry when it is back`,
        );
    }
  }
  return e;
}

/** The errno (or what a tool's stderr says) and the paths an error names. */
function facts(e: unknown): { code: string | undefined; paths: string[] } {
  if (e instanceof CommandFailed) {
    const code = GONE_TEXT.test(e.stderr) ? 'EIO' : MISSING_TEXT.test(e.stderr) ? 'ENOENT' : undefined;
    return { code, paths: e.argv.flatMap((a) => a.split(/[=,]/)).filter((a) => a.startsWith('/')) };
  }
  if (e instanceof Error) {
    const err = e as NodeJS.ErrnoException & { dest?: string };
    return { code: err.code, paths: [err.path, err.dest].filter((p): p is string => typeof p === 'string') };
  }
  return { code: undefined, paths: [] };
}
