/**
 * The node's data plane: one long-running qemu-storage-daemon that serves the
 * FUSE exports of every qcow2 volume staged on the node, driven over QMP.
 * Its lifetime is apart from the node plugin's: a restarted or upgraded plugin
 * finds it at the same socket and takes its exports back (query-block-exports).
 *
 * - managed: the plugin starts it when it first needs it, detached
 *   (--daemonize: own session, not in the plugin's process group), and quits it
 *   on a clean shutdown only when it serves nothing. Without Kubernetes.
 * - external: something else runs it (the chart's data-plane DaemonSet, via
 *   `filedriver data-plane`); the plugin only connects, and answers UNAVAILABLE
 *   while it is missing.
 *
 * The QMP monitor takes one client at a time, so this process sends its
 * sessions one after another (qemu runs monitor commands one at a time anyway).
 */
import { mkdir, readFile, rm } from 'node:fs/promises';
import { availableParallelism } from 'node:os';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { Serial } from '../domain/concurrency.js';
import { describe, internal, unavailable } from '../domain/errors.js';
import type { Runner } from './command.js';
import { Qmp } from './qmp.js';

export type DataPlaneMode = 'managed' | 'external';

/** What the running daemon can do, read from it (query-version, query-qmp-schema). */
export interface DataPlaneFeatures {
  version: string;
  /**
   * Its FUSE export takes `growable`, and with it sets FUSE up for
   * asynchronous direct I/O (qemu ≥ 11): only then may a loop device over the
   * export use direct I/O. qemu 7.2's export corrupts data under a direct-io loop.
   */
  asyncDirectIo: boolean;
  /** An export may run on several iothreads (`iothread` takes a list). */
  multiThread: boolean;
  /** The daemon's iothreads, for the exports to use. */
  iothreads: string[];
}

/** sun_path holds 108 bytes with the terminating NUL; longer paths fail or get cut. */
export const MAX_SOCKET_PATH = 107;

/** At most this many iothreads: more than the node has cores only adds switching. */
export const MAX_THREADS = 4;
export const defaultThreads = (): number => Math.max(1, Math.min(availableParallelism(), MAX_THREADS));

/** The daemon's command line: iothreads and the QMP monitor; exports come later over QMP. */
export function planeArgs(dir: string, threads: number, daemonize: boolean): string[] {
  const io = Array.from({ length: threads }, (_, i) => ['--object', `iothread,id=io${i}`]).flat();
  return [
    'qemu-storage-daemon',
    ...io,
    '--chardev',
    `socket,id=qmp0,path=${join(dir, 'qmp.sock').replaceAll(',', ',,')},server=on,wait=off`,
    '--monitor',
    'chardev=qmp0',
    '--pidfile',
    join(dir, 'qsd.pid'),
    ...(daemonize ? ['--daemonize'] : []),
  ];
}

interface SchemaEntry {
  name: string;
  'meta-type': string;
  'arg-type'?: string;
  members?: { name?: string; type: string }[];
  variants?: { case: string; type: string }[];
}

/** Reads the export options this qemu offers from its QMP schema (type names there are masked). */
export function featuresOf(schema: readonly SchemaEntry[], version: string, iothreads: string[]): DataPlaneFeatures {
  const byName = new Map(schema.map((e) => [e.name, e]));
  const add = schema.find((e) => e['meta-type'] === 'command' && e.name === 'block-export-add');
  const options = byName.get(add?.['arg-type'] ?? '');
  const fuse = byName.get(options?.variants?.find((v) => v.case === 'fuse')?.type ?? '');
  const iothread = byName.get(options?.members?.find((m) => m.name === 'iothread')?.type ?? '');
  const multiThread = iothread?.['meta-type'] === 'alternate' && (iothread.members ?? []).some((m) => byName.get(m.type)?.['meta-type'] === 'array');
  const asyncDirectIo = (fuse?.members ?? []).some((m) => m.name === 'growable') && Number.parseInt(version, 10) >= 11;
  return { version, asyncDirectIo, multiThread, iothreads };
}

/** How a qcow2 volume reaches its pod with these features, in words (doctor, logs, metrics). */
export function pathOf(f: DataPlaneFeatures): string {
  const threads = f.multiThread ? f.iothreads.length : 1;
  return f.asyncDirectIo
    ? `FUSE export on ${threads} iothread(s) with async direct I/O, direct-io loop`
    : `FUSE export on one thread, buffered loop (qemu ${f.version}: slow; install qemu 11 with scripts/install-qemu.sh)`;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

export class DataPlane {
  private readonly serial = new Serial();
  private features: DataPlaneFeatures | undefined;

  constructor(
    /** Holds qmp.sock and qsd.pid; kept short (a unix socket path has 107 bytes). */
    readonly dir: string,
    readonly mode: DataPlaneMode,
    private readonly run: Runner,
    private readonly log: Logger,
    private readonly threads = defaultThreads(),
  ) {}

  get socket(): string {
    return join(this.dir, 'qmp.sock');
  }

  private get pidFile(): string {
    return join(this.dir, 'qsd.pid');
  }

  /**
   * One QMP session with the daemon, after this process's earlier ones; starts
   * the daemon first in managed mode.
   */
  session<T>(timeoutMs: number, body: (q: Qmp, features: DataPlaneFeatures) => Promise<T>): Promise<T> {
    return this.serial.run('qmp', async () => {
      const features = await this.ensure();
      try {
        return await Qmp.session(this.socket, timeoutMs, (q) => body(q, features));
      } catch (e) {
        if (!refused(e)) throw e;
        // Gone since we last looked (killed, or the node rebooted): its exports went with it.
        // The connect failed, so nothing of `body` ran: it runs once, against a new daemon.
        this.features = undefined;
        const fresh = await this.ensure();
        return Qmp.session(this.socket, timeoutMs, (q) => body(q, fresh));
      }
    });
  }

  /** The daemon's features if it runs and answers, without starting it (doctor, metrics). */
  look(): Promise<DataPlaneFeatures | undefined> {
    return this.serial.run('qmp', async () => ((await this.answers()) ? (this.features ??= await this.read()) : undefined));
  }

  /** Quits a managed daemon that serves no export (a clean shutdown); a busy one keeps serving. */
  stopIfIdle(): Promise<boolean> {
    return this.serial.run('qmp', async () => {
      if (this.mode !== 'managed' || !(await this.answers())) return false;
      const pid = await this.pid();
      const idle = await Qmp.session(this.socket, 5_000, async (q) => {
        const r = await q.execute('query-block-exports');
        if (!r.ok || !Array.isArray(r.value) || r.value.length > 0) return false;
        await q.execute('quit').catch(() => undefined);
        return true;
      });
      if (!idle) return false;
      this.features = undefined;
      for (const end = Date.now() + 10_000; pid !== undefined && (await daemonRunning(pid, this.pidFile)) && Date.now() < end;) await sleep(20);
      await rm(this.socket, { force: true });
      await rm(this.pidFile, { force: true });
      return true;
    });
  }

  private async ensure(): Promise<DataPlaneFeatures> {
    if (this.features !== undefined) return this.features;
    if (!(await this.answers())) {
      if (this.mode === 'external') {
        throw unavailable(
          `the node's data plane (qemu-storage-daemon at ${this.socket}) is not running; the data-plane DaemonSet pod should start it`,
        );
      }
      await this.start();
    }
    this.features = await this.read();
    this.log.info({ socket: this.socket, ...this.features }, 'data plane ready');
    return this.features;
  }

  private async answers(): Promise<boolean> {
    try {
      await Qmp.session(this.socket, 2_000, () => Promise.resolve());
      return true;
    } catch {
      return false;
    }
  }

  private async start(): Promise<void> {
    if (Buffer.byteLength(this.socket) > MAX_SOCKET_PATH) {
      throw internal(`the data plane's socket path ${this.socket} is too long for a unix socket (max ${MAX_SOCKET_PATH} bytes)`);
    }
    await mkdir(this.dir, { recursive: true, mode: 0o700 });
    const pid = await this.pid();
    if (pid !== undefined && (await daemonRunning(pid, this.pidFile))) {
      throw internal(`qemu-storage-daemon ${pid} (the data plane in ${this.dir}) runs but does not answer QMP`);
    }
    await rm(this.socket, { force: true });
    try {
      await this.run(planeArgs(this.dir, this.threads, true), { timeoutMs: 30_000 });
    } catch (e) {
      throw internal(`cannot start the data plane (qemu-storage-daemon in ${this.dir}): ${describe(e)}`, e);
    }
    this.log.info({ dir: this.dir, pid: await this.pid(), threads: this.threads }, 'started the data plane');
  }

  private async read(): Promise<DataPlaneFeatures> {
    return Qmp.session(this.socket, 10_000, async (q) => {
      const version = await q.execute('query-version');
      const schema = await q.execute('query-qmp-schema');
      // qemu-storage-daemon has no query-iothreads; its objects list them.
      const objects = await q.execute('qom-list', { path: '/objects' });
      const v = (version.ok ? (version.value as { qemu?: { major: number; minor: number; micro: number } }).qemu : undefined) ?? {
        major: 0,
        minor: 0,
        micro: 0,
      };
      const ids =
        objects.ok && Array.isArray(objects.value)
          ? (objects.value as { name: string; type: string }[])
              .filter((o) => o.type === 'child<iothread>')
              .map((o) => o.name)
              .sort()
          : [];
      return featuresOf(schema.ok ? (schema.value as SchemaEntry[]) : [], `${v.major}.${v.minor}.${v.micro}`, ids);
    });
  }

  private async pid(): Promise<number | undefined> {
    const text = await readFile(this.pidFile, 'utf8').catch(() => undefined);
    const pid = text === undefined ? Number.NaN : Number.parseInt(text.trim(), 10);
    return Number.isInteger(pid) && pid > 0 ? pid : undefined;
  }
}

/**
 * A live (not zombie) qemu-storage-daemon started with this pid file: a
 * reused pid is someone else's. The data plane's, and a 0.1 volume's own.
 */
export async function daemonRunning(pid: number, pidFile: string): Promise<boolean> {
  try {
    const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
    if (/^[ZX]/.test(stat.slice(stat.lastIndexOf(')') + 2))) return false;
    const argv = (await readFile(`/proc/${pid}/cmdline`, 'utf8')).split('\0');
    return argv.includes('--pidfile') && argv[argv.indexOf('--pidfile') + 1] === pidFile;
  } catch {
    return false;
  }
}

/** The daemon is not there to connect to (connect only fails so: no socket file, or nobody listening). */
function refused(e: unknown): boolean {
  const code = (e instanceof Error ? (e.cause as NodeJS.ErrnoException | undefined) : undefined)?.code;
  return code === 'ECONNREFUSED' || code === 'ENOENT';
}
