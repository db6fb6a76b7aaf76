/**
 * What a pod does to a volume in the tests: files written and synced (their
 * checksums kept), and a writer that goes on in the background, as a database
 * would, whose shell exits 7 on the first write error.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { closeSync, fsyncSync, openSync, readFileSync, writeSync } from 'node:fs';
import { status } from '@grpc/grpc-js';

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Writes `data` and fsyncs it; returns its sha256. */
export function writeSynced(path: string, data: Buffer): string {
  const fd = openSync(path, 'w');
  writeSync(fd, data);
  fsyncSync(fd);
  closeSync(fd);
  return createHash('sha256').update(data).digest('hex');
}

export const sha = (path: string): string => createHash('sha256').update(readFileSync(path)).digest('hex');

/** Calls as the sidecars and kubelet do: ABORTED (the volume is busy) is asked again. */
export async function retryAborted<T>(call: () => Promise<T>, tries = 150, ms = 200): Promise<T> {
  for (let i = 0; ; i++) {
    try {
      return await call();
    } catch (e) {
      if ((e as { code?: number }).code !== status.ABORTED || i >= tries) throw e;
      await sleep(ms);
    }
  }
}

/** Synced 1 MiB files written round and round in `dir` until stopped. */
export class Writer {
  private readonly child: ChildProcess;

  constructor(dir: string) {
    this.child = spawn(
      'sh',
      ['-c', `i=0; while :; do dd if=/dev/urandom of=${dir}/w$((i%4)) bs=64k count=16 conv=fsync status=none || exit 7; i=$((i+1)); done`],
      {
        detached: true,
      },
    );
  }

  /** Still writing: it never failed. */
  get running(): boolean {
    return this.child.exitCode === null && this.child.signalCode === null;
  }

  /**
   * Kills the whole writer (the shell and its dd) and resolves with the
   * shell's exit code (null when killed while writing), once no process of it
   * is left: a dd in an fsync would keep the mount busy.
   */
  async stop(): Promise<number | null> {
    const w = this.child;
    const exited = !this.running ? Promise.resolve(w.exitCode) : new Promise<number | null>((r) => w.once('exit', (code) => r(code)));
    const group = (signal: NodeJS.Signals | 0): boolean => {
      try {
        process.kill(-(w.pid ?? 0), signal);
        return true;
      } catch {
        return false;
      }
    };
    group('SIGKILL');
    const code = await exited;
    for (let i = 0; i < 600 && group(0); i++) await sleep(50);
    return code;
  }
}

type Call = (method: string, request: object) => Promise<Record<string, any>>;

/**
 * What the attacher and kubelet do to give a pod a filesystem volume (publish
 * to `node`, stage, publish at the pod's target) and to take it back, with a
 * record of what is attached so a test's cleanup can take back whatever its
 * failure left.
 */
export function podAttacher(
  calls: () => { controller: Call; node: Call },
  paths: (id: string) => { staging: string; target: string },
  cap: object,
  node = 'node-a',
) {
  const attached = new Set<string>();
  return {
    attached,
    attach: async (id: string): Promise<void> => {
      const { controller, node: n } = calls();
      attached.add(id);
      await controller('ControllerPublishVolume', { volume_id: id, node_id: node, volume_capability: cap, readonly: false });
      await n('NodeStageVolume', { volume_id: id, staging_target_path: paths(id).staging, volume_capability: cap });
      await n('NodePublishVolume', { volume_id: id, staging_target_path: paths(id).staging, target_path: paths(id).target, volume_capability: cap });
    },
    detach: async (id: string): Promise<void> => {
      const { controller, node: n } = calls();
      await n('NodeUnpublishVolume', { volume_id: id, target_path: paths(id).target });
      await n('NodeUnstageVolume', { volume_id: id, staging_target_path: paths(id).staging });
      await controller('ControllerUnpublishVolume', { volume_id: id, node_id: node });
      attached.delete(id);
    },
  };
}
