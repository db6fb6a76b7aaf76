/**
 * `filedriver data-plane`: runs the node's qemu-storage-daemon in the
 * foreground, for the chart's data-plane DaemonSet. Its pod is apart from the
 * node plugin's, so upgrading or restarting the plugin leaves every qcow2
 * export running; the plugin (--data-plane external) drives it over the QMP
 * socket in the shared kubelet plugin directory.
 */
import { mkdir, rm } from 'node:fs/promises';
import { execa } from 'execa';
import { qemuOf, stateDir } from '../app.js';
import { buildConfig, envSettings, type Config, type RawSettings } from '../config.js';
import { pino } from 'pino';
import { invalid, precondition } from '../domain/errors.js';
import { makeRunner } from '../system/command.js';
import { DataPlane, defaultThreads, MAX_THREADS, planeArgs } from '../system/data-plane.js';
import { StageState } from '../node/state.js';
import { parseCommand, say } from './context.js';

const HELP = `Usage: filedriver data-plane [--kubelet-dir DIR] [--driver-name NAME] [--qemu DIR|system] [--threads N]

Runs the node's qemu-storage-daemon (the data plane of qcow2 volumes) in the foreground, with
its QMP socket in <kubelet-dir>/plugins/<driver-name>/dp/. The node plugin, run with
--data-plane external, drives it there. Stopping it stops the I/O of every qcow2 volume on the
node: drain the node first.

  --kubelet-dir DIR   kubelet root (default /var/lib/kubelet); env FILEDRIVER_KUBELET_DIR
  --driver-name NAME  CSI driver name (default filedriver.dev); env FILEDRIVER_DRIVER_NAME
  --qemu DIR|system   the qemu to run, as for serve; env FILEDRIVER_QEMU
  --threads N         iothreads the exports run on (default: the node's cores, at most ${MAX_THREADS})`;

/** What `filedriver data-plane` runs with: the driver's settings it uses, and the iothreads. */
export interface DataPlaneSettings {
  config: Config;
  threads: number;
  /** <kubelet-dir>/plugins/<driver-name>/dp: the QMP socket and pid file. */
  dir: string;
}

/** The command line through the command's own options (the chart's tests use it on the pods' args). */
export function parseDataPlane(argv: string[], env: NodeJS.ProcessEnv): DataPlaneSettings | 'help' {
  const { values, positionals } = parseCommand('data-plane', {
    args: argv,
    options: {
      'kubelet-dir': { type: 'string' },
      'driver-name': { type: 'string' },
      qemu: { type: 'string' },
      threads: { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
    strict: true,
    allowPositionals: true,
  });
  if (values.help === true) return 'help';
  if (positionals.length > 0) throw invalid(`data-plane takes no arguments, got ${positionals.join(' ')}`);
  const flags: RawSettings = { endpoint: 'unix:///not-served-by-data-plane', mounts: ['unused=/'] };
  if (values['kubelet-dir'] !== undefined) flags.kubeletDir = values['kubelet-dir'];
  if (values['driver-name'] !== undefined) flags.driverName = values['driver-name'];
  if (values.qemu !== undefined) flags.qemu = values.qemu;
  const config = buildConfig(envSettings(env), flags);
  const threads = values.threads === undefined ? defaultThreads() : Number(values.threads);
  if (!Number.isInteger(threads) || threads < 1 || threads > 64)
    throw invalid(`--threads ${values.threads ?? ''} must be a whole number from 1 to 64`);
  return { config, threads, dir: new StageState(stateDir(config)).planeDir };
}

const silentLog = pino({ level: 'silent' });

export async function dataPlaneCommand(argv: string[]): Promise<number> {
  const settings = parseDataPlane(argv, process.env);
  if (settings === 'help') {
    say(HELP);
    return 0;
  }
  const { config, threads, dir } = settings;
  await mkdir(dir, { recursive: true, mode: 0o700 });
  // A daemon that still answers there (an old pod shutting down, a plugin's managed one) keeps its
  // socket and its exports: this one waits for the pod's restart instead of taking the socket over.
  if ((await new DataPlane(dir, 'external', makeRunner(silentLog), silentLog).look()) !== undefined) {
    throw precondition(`a data plane already answers at ${dir}/qmp.sock; not starting a second one`);
  }
  await rm(`${dir}/qmp.sock`, { force: true });
  const qemu = qemuOf(config);
  const [file = '', ...args] = qemu.argv('qemu-storage-daemon', planeArgs(dir, threads, false).slice(1));
  process.stderr.write(
    `filedriver data-plane: qemu-storage-daemon (${qemu.manifest?.version ?? 'system'}) with ${threads} iothread(s), QMP at ${dir}/qmp.sock\n`,
  );
  const daemon = execa(file, args, { env: qemu.env, stdio: 'inherit', reject: false });
  // The pod's stop reaches the daemon; what it does then is qemu's (the exports end).
  for (const signal of ['SIGTERM', 'SIGINT'] as const) process.once(signal, () => daemon.kill(signal));
  const result = await daemon;
  return result.exitCode ?? 1;
}
