/**
 * The real server, `node dist/src/main.js serve`, as a child process on a unix
 * socket under the bench's base directory, and a plain gRPC client for it —
 * what kubelet and the sidecars see.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, existsSync, openSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { connect as connectCsi, type CsiClient } from '../../demo/client.js';
import { packageRoot } from '../../src/csi/proto.js';
import type { Cleanup } from './cleanup.js';
import { sleep } from './sh.js';

export interface Memory {
  rssKiB: number;
  hwmKiB: number;
}

export async function memoryOf(pid: number): Promise<Memory> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8');
  const kib = (key: string): number => Number(new RegExp(`^${key}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? 'NaN');
  return { rssKiB: kib('VmRSS'), hwmKiB: kib('VmHWM') };
}

export interface Driver {
  pid: number;
  client: CsiClient;
  memory(): Promise<Memory>;
  stop(): Promise<void>;
}

let main = join(packageRoot(), 'dist', 'src', 'main.js');

/** Benchmarks the build in `root` (a package root with dist/src/main.js) instead of this one. */
export function useDriverBuild(root: string): void {
  main = join(root, 'dist', 'src', 'main.js');
}

export function driverMain(): string {
  return main;
}

export interface DriverOptions {
  base: string;
  mounts: Record<string, string>;
  kubeletDir: string;
  /** Distinguishes this server's socket and log file. */
  tag: string;
  args?: string[];
}

/** Starts the server and waits until Probe answers ready. Logs go to a file at info level, as in production. */
export async function startDriver(o: DriverOptions, cleanup: Cleanup): Promise<Driver> {
  const socket = join(o.base, `csi-${o.tag}.sock`);
  const logFd = openSync(join(o.base, `driver-${o.tag}.log`), 'a');
  const args = [main, 'serve', '--endpoint', `unix://${socket}`, '--node-id', 'bench-node', '--kubelet-dir', o.kubeletDir, '--log-level', 'info'];
  for (const [name, path] of Object.entries(o.mounts)) args.push('--mount', `${name}=${path}`);
  args.push(...(o.args ?? []));
  const child: ChildProcess = spawn(process.execPath, args, { stdio: ['ignore', logFd, logFd] });
  closeSync(logFd);
  const exited = new Promise<void>((res) => child.once('exit', () => res()));
  const client = connectCsi(socket, { deadlineMs: 900_000 });
  const stop = cleanup.add(`driver ${o.tag}`, async () => {
    client.close();
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
    await Promise.race([exited, sleep(15_000)]);
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  });
  let up = false;
  for (let i = 0; i < 300 && !up && child.exitCode === null; i++) {
    if (existsSync(socket))
      up = await client.identity('Probe').then(
        (r: { ready?: { value?: boolean } }) => r.ready?.value === true,
        () => false,
      );
    if (!up) await sleep(50);
  }
  if (!up || child.pid === undefined) {
    await stop();
    throw new Error(`driver ${o.tag} did not become ready; see ${join(o.base, `driver-${o.tag}.log`)}`);
  }
  const pid = child.pid;
  return { pid, client, memory: () => memoryOf(pid), stop };
}

/** CSI request builders. */
export const MiB = 1024 * 1024;
export const GiB = 1024 * MiB;

export function mountCap(fsType = 'ext4') {
  return { mount: { fs_type: fsType, mount_flags: [] }, access_mode: { mode: 'SINGLE_NODE_WRITER' } };
}

export function createRequest(name: string, bytes: number, parameters: Record<string, string>, source?: object) {
  return {
    name,
    capacity_range: { required_bytes: String(bytes) },
    volume_capabilities: [mountCap()],
    parameters,
    ...(source === undefined ? {} : { volume_content_source: source }),
  };
}
