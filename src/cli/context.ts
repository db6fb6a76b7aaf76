/**
 * What the admin commands share: their common flags, and the adapters and
 * stores they act through, wired as app.ts wires them for serve. The admin
 * commands work on the mounts directly; there is no gRPC in between.
 */
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { destination, pino, type Logger } from 'pino';
import { qemuOf, storeParts } from '../app.js';
import type { QemuInstall } from '../system/qemu-tools.js';
import { buildAdminConfig, ConfigError, envSettings, readConfigFile, type AdminConfig, type RawSettings } from '../config.js';
import type { Relocator } from '../controller/relocate.js';
import { describe } from '../domain/errors.js';
import type { Ledger } from '../storage/ledger.js';
import type { Mounts } from '../storage/mounts.js';
import type { SnapshotStore } from '../storage/snapshot-store.js';
import type { VolumeStore } from '../storage/volume-store.js';
import { makeRunner, type Runner } from '../system/command.js';
import { makeFiles, type Files } from '../system/files.js';
import { makeLoopDevices, type LoopDevices } from '../system/loop-devices.js';
import type { QemuImg } from '../system/qemu-img.js';

/** Flags every admin command takes. `--mount` is import's target, so shares are defined with `--share`. */
export const COMMON_OPTIONS = {
  share: { type: 'string', multiple: true },
  config: { type: 'string' },
  'driver-name': { type: 'string' },
  verbose: { type: 'boolean' },
  help: { type: 'boolean', short: 'h' },
} as const;

export const COMMON_HELP = `Mounts are defined as for serve (flags win over the environment, which wins over the file):
  --share NAME=PATH      a mount (repeat); env FILEDRIVER_MOUNTS=a=/x,b=/y
  --config FILE          serve's YAML/JSON settings file; env FILEDRIVER_CONFIG
  --driver-name NAME     CSI driver name (default filedriver.dev); env FILEDRIVER_DRIVER_NAME
  --verbose              log every tool run (JSON lines on stderr)
  --help                 show this help`;

export interface CommonValues {
  share?: string[] | undefined;
  config?: string | undefined;
  'driver-name'?: string | undefined;
  verbose?: boolean | undefined;
}

export interface Context {
  config: AdminConfig;
  log: Logger;
  /** The qemu the tools run as: a private prefix or the system's. */
  qemu: QemuInstall;
  run: Runner;
  qemuImg: QemuImg;
  files: Files;
  loops: LoopDevices;
  mounts: Mounts;
  store: VolumeStore;
  snapshots: SnapshotStore;
  ledger: Ledger;
  relocator: Relocator;
}

/** parseArgs, with a bad command line reported like a bad setting (exit code 2). */
export function parseCommand<T extends ParseArgsConfig>(command: string, config: T): ReturnType<typeof parseArgs<T>> {
  try {
    return parseArgs(config);
  } catch (e) {
    throw new ConfigError([`${describe(e)} (see filedriver ${command} --help)`]);
  }
}

/** A required string flag, or a usage error naming it. */
export function required(command: string, value: string | undefined, flag: string): string {
  if (value === undefined || value === '') throw new ConfigError([`${command}: ${flag} is required (see filedriver ${command} --help)`]);
  return value;
}

export function buildContext(values: CommonValues): Context {
  const flags: RawSettings = {};
  if (values.share !== undefined) flags.mounts = values.share;
  if (values['driver-name'] !== undefined) flags.driverName = values['driver-name'];
  const file = values.config ?? process.env['FILEDRIVER_CONFIG'];
  let config: AdminConfig;
  try {
    config = buildAdminConfig(file === undefined ? {} : readConfigFile(file), envSettings(process.env), flags);
  } catch (e) {
    // The same checks as serve's, whose flag is --mount; here mounts come with --share.
    if (e instanceof ConfigError) throw new ConfigError(e.problems.map((p) => p.replace(/--mount\b/, '--share')));
    throw e;
  }
  // stdout carries the command's output (YAML, tables, JSON); logs go to stderr, and only when asked.
  const log = pino({ level: values.verbose === true ? 'debug' : 'silent', base: { driver: config.driverName } }, destination(2));
  const qemu = qemuOf(config);
  const run = makeRunner(log.child({ component: 'command' }), { qemu });
  // The same stores and move machinery as serve's controller (app.ts).
  const { qemuImg, mounts, store, snapshotStore: snapshots, ledger, relocator } = storeParts(config, log, run);
  return { config, log, qemu, run, qemuImg, files: makeFiles(run), loops: makeLoopDevices(run), mounts, store, snapshots, ledger, relocator };
}

/** Long copies show qemu-img's progress bar, on a terminal only. */
// @types/node types stdout as a tty.WriteStream (isTTY: true); piped or redirected, it has no isTTY.
export const progress = (): boolean => (process.stdout as { isTTY?: boolean }).isTTY === true;

export const say = (text: string): void => {
  process.stdout.write(text.endsWith('\n') ? text : `${text}\n`);
};
export const note = (text: string): void => {
  process.stderr.write(text.endsWith('\n') ? text : `${text}\n`);
};

/** Approximate human size for tables ("1.5 GiB"); JSON output keeps exact bytes. */
export function humanBytes(n: bigint): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB', 'EiB'];
  let i = 0;
  let value = Number(n);
  while (value >= 1024 && i < units.length - 1) {
    value /= 1024;
    i++;
  }
  const text = i === 0 || value >= 100 || Number.isInteger(value) ? String(Math.round(value)) : value.toFixed(1);
  return `${text} ${units[i] ?? 'B'}`;
}
