/**
 * Settings from flags, environment and an optional YAML/JSON file (flags win,
 * then environment, then file), validated once into a frozen Config. Every
 * problem is reported, one line each, so an admin fixes them in one go.
 */
import { readFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { isAbsolute, normalize } from 'node:path';
import { parseDocument } from 'yaml';
import { isValidMountName } from './domain/ids.js';
import { isFormat, type Format } from './domain/parameters.js';
import { GiB, MiB } from './domain/sizes.js';

export type Mode = 'all' | 'controller' | 'node';
export interface MountConfig {
  name: string;
  path: string;
}

export interface Config {
  endpoint: string;
  socketPath: string;
  nodeId: string;
  mode: Mode;
  driverName: string;
  defaultFormat: Format;
  logLevel: string;
  mounts: readonly MountConfig[];
  defaultSizeBytes: bigint;
  overSubscription: number;
  maxVolumesPerNode: number;
  /** Seconds a mount's health is cached. */
  healthCacheSeconds: number;
  /** Root of the kubelet's directory; node target paths must lie inside it. */
  kubeletDir: string;
  /** Where to serve /metrics and /healthz; off when unset. An empty host means every interface. */
  metricsAddress: ListenAddress | undefined;
  /** A private qemu install's directory, 'system', or unset (the default prefix if installed, else the system's). */
  qemu: string | undefined;
  /** Who runs the node's qemu-storage-daemon: the node plugin (managed) or the data-plane DaemonSet (external). */
  dataPlane: 'managed' | 'external';
}

export interface ListenAddress {
  host: string;
  port: number;
}

export class ConfigError extends Error {
  constructor(readonly problems: string[]) {
    super(problems.join('\n'));
    this.name = 'ConfigError';
  }
}

/** Raw values before validation, by setting name. */
export type RawSettings = Partial<Record<keyof typeof SETTINGS, string | string[]>>;

/** Each setting's flag (also its file key, camel-cased) and environment variable. */
export const SETTINGS = {
  endpoint: { flag: 'endpoint', env: ['FILEDRIVER_ENDPOINT', 'CSI_ENDPOINT'], help: 'unix:///abs/path/csi.sock' },
  nodeId: { flag: 'node-id', env: ['FILEDRIVER_NODE_ID', 'KUBE_NODE_NAME'], help: "this node's name (default: hostname)" },
  mounts: { flag: 'mount', env: ['FILEDRIVER_MOUNTS'], help: 'NAME=PATH of a pre-mounted share; repeat (env: comma-separated)' },
  mode: { flag: 'mode', env: ['FILEDRIVER_MODE'], help: 'all | controller | node (default all)' },
  driverName: { flag: 'driver-name', env: ['FILEDRIVER_DRIVER_NAME'], help: 'CSI driver name (default filedriver.dev)' },
  defaultFormat: { flag: 'default-format', env: ['FILEDRIVER_DEFAULT_FORMAT'], help: 'qcow2 | raw (default qcow2)' },
  logLevel: { flag: 'log-level', env: ['FILEDRIVER_LOG_LEVEL'], help: 'trace|debug|info|warn|error (default info)' },
  defaultSize: { flag: 'default-size', env: ['FILEDRIVER_DEFAULT_SIZE'], help: 'bytes, or with Mi/Gi/Ti suffix (default 1Gi)' },
  overSubscription: { flag: 'over-subscription', env: ['FILEDRIVER_OVER_SUBSCRIPTION'], help: 'thin qcow2 over-commit ratio (default 1.0)' },
  maxVolumesPerNode: { flag: 'max-volumes-per-node', env: ['FILEDRIVER_MAX_VOLUMES_PER_NODE'], help: '0 = unlimited (default)' },
  healthCacheSeconds: { flag: 'health-cache-seconds', env: ['FILEDRIVER_HEALTH_CACHE_SECONDS'], help: 'mount health cache (default 2)' },
  kubeletDir: { flag: 'kubelet-dir', env: ['FILEDRIVER_KUBELET_DIR'], help: 'kubelet root (default /var/lib/kubelet)' },
  metricsAddress: {
    flag: 'metrics-address',
    env: ['FILEDRIVER_METRICS_ADDRESS'],
    help: 'HOST:PORT for /metrics and /healthz (off by default; :PORT = all interfaces)',
  },
  qemu: {
    flag: 'qemu',
    env: ['FILEDRIVER_QEMU'],
    help: "directory of a private qemu (scripts/install-qemu.sh), or system (default: /opt/filedriver/qemu if installed, else the system's)",
  },
  dataPlane: {
    flag: 'data-plane',
    env: ['FILEDRIVER_DATA_PLANE'],
    help: "managed | external: who runs the node's qemu-storage-daemon (default managed: this process starts it)",
  },
} as const;

const LOG_LEVELS = ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'];
const DRIVER_NAME = /^(?=.{1,63}$)[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)+$/;

/**
 * The file each layer read by readConfigFile came from, and what was wrong in
 * it: buildConfig names the file for problems with its values, and lists the
 * file's own problems with everything else wrong, all at once.
 */
const layerFiles = new WeakMap<RawSettings, string>();
const layerProblems = new WeakMap<RawSettings, string[]>();

/**
 * Reads the file named by --config / FILEDRIVER_CONFIG into raw settings. A
 * file that cannot be read or parsed is a ConfigError naming the file; unknown
 * keys and malformed entries are reported by buildConfig, with every other
 * problem, each line naming the file.
 */
export function readConfigFile(file: string): RawSettings {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    const why = (e as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file' : (e as Error).message;
    throw new ConfigError([`${file}: cannot read the config file: ${why}`]);
  }
  const doc = parseDocument(text);
  if (doc.errors.length > 0)
    throw new ConfigError(doc.errors.map((e) => `${file}: not YAML or JSON: ${(e.message.split('\n')[0] ?? '').replace(/:$/, '')}`));
  const data: unknown = doc.toJS();
  const raw: RawSettings = {};
  layerFiles.set(raw, file);
  if (data === null || data === undefined) return raw;
  if (typeof data !== 'object' || Array.isArray(data)) throw new ConfigError([`${file}: expected a mapping of settings`]);
  const problems: string[] = [];
  for (const [key, value] of Object.entries(data as Record<string, unknown>)) {
    if (!(key in SETTINGS)) problems.push(`${file}: unknown setting ${key}; valid: ${Object.keys(SETTINGS).join(', ')}`);
    else if (key === 'mounts') raw.mounts = mountsFromFile(value, file, problems);
    else if (typeof value === 'string' || typeof value === 'number' || typeof value === 'boolean') raw[key as keyof typeof SETTINGS] = String(value);
    else problems.push(`${file}: ${key} must be a single value, not ${JSON.stringify(value)}`);
  }
  layerProblems.set(raw, problems);
  return raw;
}

function mountsFromFile(value: unknown, file: string, problems: string[]): string[] {
  const scalar = (v: unknown) => typeof v === 'string' || typeof v === 'number';
  if (Array.isArray(value)) {
    return value.flatMap((m: unknown) => {
      if (typeof m === 'string') return [m];
      const o = (m ?? {}) as { name?: unknown; path?: unknown };
      if (scalar(o.name) && scalar(o.path)) return [`${String(o.name)}=${String(o.path)}`];
      problems.push(`${file}: mounts entry ${JSON.stringify(m)} must be NAME=PATH or {name, path}`);
      return [];
    });
  }
  if (value !== null && typeof value === 'object') {
    return Object.entries(value as Record<string, unknown>).map(([n, p]) => `${n}=${String(p)}`);
  }
  problems.push(`${file}: mounts must be a list of {name, path} or a mapping NAME: PATH`);
  return [];
}

export function envSettings(env: NodeJS.ProcessEnv): RawSettings {
  const raw: RawSettings = {};
  for (const [key, spec] of Object.entries(SETTINGS) as [keyof typeof SETTINGS, (typeof SETTINGS)[keyof typeof SETTINGS]][]) {
    const name = spec.env.find((e) => env[e] !== undefined && env[e] !== '');
    if (name === undefined) continue;
    const value = env[name] ?? '';
    raw[key] = key === 'mounts' ? value.split(',').filter((s) => s !== '') : value;
  }
  return raw;
}

function parseSize(text: string): bigint | undefined {
  const m = /^(\d+)\s*(|Mi|Gi|Ti)$/.exec(text.trim());
  if (m === null) return undefined;
  const unit = { '': 1n, Mi: MiB, Gi: GiB, Ti: GiB * 1024n }[m[2] ?? ''] ?? 1n;
  return BigInt(m[1] ?? '0') * unit;
}

/** Merges the layers (later wins) and validates. Throws ConfigError listing every problem. */
export function buildConfig(...layers: RawSettings[]): Config {
  const raw: RawSettings = Object.assign({}, ...layers) as RawSettings;
  const problems: string[] = layers.flatMap((layer) => layerProblems.get(layer) ?? []);
  // A problem with a value from a config file names the file and the file's key, not the flag.
  const fileOf = new Map<keyof typeof SETTINGS, string>();
  for (const layer of layers) {
    for (const k of Object.keys(layer) as (keyof typeof SETTINGS)[]) {
      const file = layerFiles.get(layer);
      if (file === undefined) fileOf.delete(k);
      else fileOf.set(k, file);
    }
  }
  const problem = (k: keyof typeof SETTINGS, text: string): void => {
    const file = fileOf.get(k);
    problems.push(file === undefined ? text : `${file}: ${text.replace(new RegExp(`--${SETTINGS[k].flag}\\b`, 'g'), k)}`);
  };
  const str = (k: keyof typeof SETTINGS): string | undefined => {
    const v = raw[k];
    return Array.isArray(v) ? v[v.length - 1] : v;
  };

  const endpoint = str('endpoint') ?? '';
  let socketPath = '';
  if (endpoint === '') problem('endpoint', '--endpoint is required (unix:///abs/path/csi.sock)');
  else if (!endpoint.startsWith('unix://') || !isAbsolute(endpoint.slice('unix://'.length))) {
    problem('endpoint', `--endpoint ${endpoint} must be unix:// followed by an absolute path`);
  } else socketPath = endpoint.slice('unix://'.length);

  const mode = str('mode') ?? 'all';
  if (!['all', 'controller', 'node'].includes(mode)) problem('mode', `--mode ${mode} must be all, controller or node`);

  const driverName = str('driverName') ?? 'filedriver.dev';
  if (!DRIVER_NAME.test(driverName)) problem('driverName', `--driver-name ${driverName} must be a domain-style name of at most 63 characters`);

  const defaultFormat = str('defaultFormat') ?? 'qcow2';
  if (!isFormat(defaultFormat)) problem('defaultFormat', `--default-format ${defaultFormat} must be qcow2 or raw`);

  const logLevel = str('logLevel') ?? 'info';
  if (!LOG_LEVELS.includes(logLevel)) problem('logLevel', `--log-level ${logLevel} must be one of ${LOG_LEVELS.join(', ')}`);

  const mounts = parseMounts(raw.mounts, (text) => problem('mounts', text));

  const defaultSizeText = str('defaultSize') ?? '1Gi';
  const defaultSizeBytes = parseSize(defaultSizeText);
  if (defaultSizeBytes === undefined || defaultSizeBytes < MiB)
    problem('defaultSize', `--default-size ${defaultSizeText} must be at least 1Mi (e.g. 1Gi)`);

  const number = (k: keyof typeof SETTINGS, def: number, ok: (n: number) => boolean, rule: string): number => {
    const text = str(k);
    if (text === undefined) return def;
    const n = Number(text);
    if (text.trim() === '' || !Number.isFinite(n) || !ok(n)) problem(k, `--${SETTINGS[k].flag} ${text} must be ${rule}`);
    return n;
  };
  const overSubscription = number('overSubscription', 1, (n) => n > 0, 'a number above 0 (1.0 = no over-commit)');
  const maxVolumesPerNode = number('maxVolumesPerNode', 0, (n) => Number.isInteger(n) && n >= 0, 'a whole number (0 = unlimited)');
  const healthCacheSeconds = number('healthCacheSeconds', 2, (n) => n >= 0 && n <= 300, 'between 0 and 300');

  const kubeletDir = str('kubeletDir') ?? '/var/lib/kubelet';
  if (!isAbsolute(kubeletDir)) problem('kubeletDir', `--kubelet-dir ${kubeletDir} must be an absolute path`);
  const nodeId = str('nodeId') ?? hostname();
  if (nodeId === '' || nodeId.length > 256) problem('nodeId', '--node-id must be 1-256 characters');
  const metricsText = str('metricsAddress');
  const metricsAddress = metricsText === undefined ? undefined : parseListenAddress(metricsText);
  if (metricsText !== undefined && metricsAddress === undefined) {
    problem('metricsAddress', `--metrics-address ${metricsText} must be HOST:PORT (e.g. 0.0.0.0:9810, [::1]:9810 or :9810), port 0-65535`);
  }

  const qemu = str('qemu');
  if (qemu !== undefined && qemu !== 'system' && !isAbsolute(qemu)) problem('qemu', `--qemu ${qemu} must be an absolute directory or system`);
  const dataPlane = str('dataPlane') ?? 'managed';
  if (dataPlane !== 'managed' && dataPlane !== 'external') problem('dataPlane', `--data-plane ${dataPlane} must be managed or external`);

  if (problems.length > 0) throw new ConfigError(problems);
  return Object.freeze({
    endpoint,
    socketPath,
    nodeId,
    mode: mode as Mode,
    driverName,
    defaultFormat: defaultFormat as Format,
    logLevel,
    mounts: Object.freeze(mounts),
    defaultSizeBytes: defaultSizeBytes ?? GiB,
    overSubscription,
    maxVolumesPerNode,
    healthCacheSeconds,
    kubeletDir,
    metricsAddress,
    qemu,
    dataPlane: dataPlane as Config['dataPlane'],
  });
}

/** `HOST:PORT`, `[IPv6]:PORT` or `:PORT`; port 0 lets the system pick (the chosen one is logged). */
export function parseListenAddress(text: string): ListenAddress | undefined {
  const m = /^(?:\[([0-9A-Fa-f:.]+)\]|([A-Za-z0-9.-]*)):(\d{1,5})$/.exec(text.trim());
  if (m === null) return undefined;
  const port = Number(m[3]);
  if (port > 65535) return undefined;
  return { host: m[1] ?? m[2] ?? '', port };
}

function parseMounts(value: string | string[] | undefined, problem: (text: string) => void): MountConfig[] {
  const items = value === undefined ? [] : Array.isArray(value) ? value : [value];
  if (items.length === 0) problem('at least one --mount NAME=PATH is required');
  const mounts: MountConfig[] = [];
  for (const item of items) {
    const eq = item.indexOf('=');
    const name = eq < 0 ? '' : item.slice(0, eq);
    const path = eq < 0 ? '' : item.slice(eq + 1);
    if (eq < 0) problem(`--mount ${item} must be NAME=PATH`);
    else if (!isValidMountName(name))
      problem(`--mount ${item}: name ${JSON.stringify(name)} must be 1-40 of a-z 0-9 - (not starting or ending with -)`);
    else if (!isAbsolute(path)) problem(`--mount ${item}: path must be absolute`);
    else if (mounts.some((m) => m.name === name)) problem(`--mount ${name} is given twice`);
    else {
      const clean = normalize(path).replace(/\/+$/, '') || '/';
      // One share under two names, or one inside another, would count its space twice and
      // show one driver tree under two names.
      const clash = mounts.find((m) => m.path === clean || isInside(m.path, clean) || isInside(clean, m.path));
      if (clash !== undefined) problem(`--mount ${name}=${path} overlaps --mount ${clash.name}=${clash.path}; each share once, none inside another`);
      else mounts.push({ name, path: clean });
    }
  }
  return mounts;
}

function isInside(parent: string, child: string): boolean {
  return child.startsWith(parent === '/' ? '/' : `${parent}/`);
}

/** What the admin commands (import, move, export, list, doctor) need: they act on the mounts, not on a socket. */
export type AdminConfig = Pick<Config, 'driverName' | 'defaultFormat' | 'mounts' | 'overSubscription' | 'healthCacheSeconds' | 'qemu' | 'kubeletDir'>;

/**
 * The admin commands' settings, from the same layers as serve's so one config
 * file serves both. Everything is validated as for serve except the endpoint,
 * which is serve's alone and so is not required here.
 */
export function buildAdminConfig(...layers: RawSettings[]): AdminConfig {
  const config = buildConfig(...layers, { endpoint: 'unix:///not-served-by-admin-commands' });
  const { driverName, defaultFormat, mounts, overSubscription, healthCacheSeconds, qemu, kubeletDir } = config;
  return Object.freeze({ driverName, defaultFormat, mounts, overSubscription, healthCacheSeconds, qemu, kubeletDir });
}
