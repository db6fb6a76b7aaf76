/**
 * Runs the real `filedriver serve` (built JS) as a child process on a temp
 * unix socket, as kubelet and the sidecars would see it.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, createWriteStream } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { connect, type CsiClient } from './client.js';

export const MAIN = resolve(import.meta.dirname, '../../dist/src/main.js');

export interface Driver {
  endpoint: string;
  client: CsiClient;
  process: ChildProcess;
  logFile: string;
  /** SIGTERM and wait for exit; returns the exit code. */
  stop(): Promise<number | null>;
  /** SIGKILL, as a crash. */
  kill(): Promise<void>;
  /** SIGKILL to its whole process group (started with `group`), as a container's end. */
  killGroup(): Promise<void>;
}

export interface DriverOptions {
  mounts: Record<string, string>;
  args?: string[];
  env?: Record<string, string>;
  /** Reuse a socket directory (restart tests). */
  dir?: string;
  /** Its own process group, so killGroup() takes it and every child still in the group. */
  group?: boolean;
}

/** Drivers started in this test file and not yet exited. */
const running = new Set<ChildProcess>();

/**
 * SIGKILLs the drivers this file started and never stopped (a test failed
 * before its stop), and names them. Run after each file (setup-file.ts).
 */
export async function killStrayDrivers(): Promise<string[]> {
  const strays = [...running];
  for (const child of strays) {
    const gone = new Promise((r) => child.once('exit', r));
    child.kill('SIGKILL');
    if (child.exitCode === null && child.signalCode === null) await gone;
  }
  return strays.map((c) => `pid ${String(c.pid)}: ${c.spawnargs.slice(1).join(' ')}`);
}

export async function startDriver(options: DriverOptions): Promise<Driver> {
  const dir = options.dir ?? mkdtempSync(join(tmpdir(), 'fdtest-sock-'));
  const socket = join(dir, 'csi.sock');
  const endpoint = `unix://${socket}`;
  const logFile = join(dir, `driver-${Date.now()}.log`);
  const args = [MAIN, 'serve', '--endpoint', endpoint, '--node-id', 'node-a', '--log-level', 'debug'];
  for (const [name, path] of Object.entries(options.mounts)) args.push('--mount', `${name}=${path}`);
  args.push(...(options.args ?? []));
  const child = spawn(process.execPath, args, {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, ...options.env },
    detached: options.group === true,
  });
  const log = createWriteStream(logFile);
  child.stdout.pipe(log);
  child.stderr.pipe(log);
  running.add(child);
  const exited = new Promise<number | null>((res) => child.once('exit', (code) => res(code)));
  child.once('exit', () => running.delete(child));
  // Ready means answering: a crashed predecessor may have left its socket file behind.
  const client = connect(endpoint);
  let up = false;
  // Start-up takes as long as a busy machine makes it; the bound (below vitest's hook timeout) only stops a hang.
  for (const end = Date.now() + 45_000; !up && child.exitCode === null && Date.now() < end;) {
    if (existsSync(socket))
      up = await client.identity('Probe').then(
        () => true,
        () => false,
      );
    if (!up) await new Promise((r) => setTimeout(r, 50));
  }
  if (!up) {
    client.close();
    child.kill('SIGKILL');
    throw new Error(`driver did not start; see ${logFile}`);
  }
  const cleanupDir = options.dir === undefined;
  return {
    endpoint,
    client,
    process: child,
    logFile,
    async stop() {
      client.close();
      if (child.exitCode === null) child.kill('SIGTERM');
      const code = await exited;
      if (cleanupDir) rmSync(dir, { recursive: true, force: true });
      return code;
    },
    async kill() {
      client.close();
      child.kill('SIGKILL');
      await exited;
    },
    async killGroup() {
      client.close();
      if (options.group !== true || child.pid === undefined) throw new Error('killGroup needs a driver started with group: true');
      process.kill(-child.pid, 'SIGKILL');
      await exited;
    },
  };
}
