/**
 * Settings from flags, environment and an optional YAML/JSON file (flags win,
 * then environment, then file), validated once into a frozen Config. Every
 * problem is reported, one line each, so an admin fixes them in one go.
 */
import { readFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { isAbsolute, normalize } from 'node:path';
import { parse as parseYaml } from 'yaml';
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
  nodeId: { flag: 'node-id', env: ['FILEDRIVER_NODE_ID', 'KUBE_NODE_NAME'], help: 'this node\'s name (default: hostname)' },
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
  metricsAddress: { flag: 'metrics-address', env: ['FILEDRIVER_METRICS_ADDRESS'], help: 'HOST:PORT for /metrics and /healthz (off by default; :PORT = all interfaces)' },
} as const;

const LOG_LEVELS = ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'];
const DRIVER_NAME = /^(?=.{1,63}$)[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)+$/;

/** Reads the file named by --config / FILEDRIVER_CONFIG into raw settings. */
export function readConfigFile(file: string): RawSettings {
  const data: unknown = parseYaml(readFileSync(file, 'utf8'));
  if (data === null || data === undefined) return {};
  if (typeof data !== 'object' || Array.isArray(data)) throw new ConfigError([`${file}: expected a mapping of settings`]);
  const raw: RawSettings = {};
  for (const [key, value] of Object.entries(data as Record<string, unknown>)) {
    if (!(key in SETTINGS)) throw new ConfigError([`${file}: unknown setting ${key}; valid: ${Object.keys(SETTINGS).join(', ')}`]);
    const k = key as keyof typeof SETTINGS;
    if (k === 'mounts') raw.mounts = mountsFromFile(value, file);
    else raw[k] = String(value);
  }
  return raw;
}

function mountsFromFile(value: unknown, file: string): string[] {
  if (Array.isArray(value)) {
    return value.map((m: unknown) => {
      if (typeof m === 'string') return m;
      const o = m as { name?: unknown; path?: unknown };
      return `${String(o.name)}=${String(o.path)}`;
    });
  }
  if (value !== null && typeof value === 'object') {
    return Object.entries(value as Record<string, unknown>).map(([n, p]) => `${n}=${String(p)}`);
  }
  throw new ConfigError([`${file}: mounts must be a list of {name, path} or a mapping NAME: PATH`]);
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
  const problems: string[] = [];
  const str = (k: keyof typeof SETTINGS): string | undefined => {
    const v = raw[k];
    return Array.isArray(v) ? v[v.length - 1] : v;
  };

  const endpoint = str('endpoint') ?? '';
  let socketPath = '';
  if (endpoint === '') problems.push('--endpoint is required (unix:///abs/path/csi.sock)');
  else if (!endpoint.startsWith('unix://') || !isAbsolute(endpoint.slice('unix://'.length))) {
    problems.push(`--endpoint ${endpoint} must be unix:// followed by an absolute path`);
  } else socketPath = endpoint.slice('unix://'.length);

  const mode = str('mode') ?? 'all';
  if (!['all', 'controller', 'node'].includes(mode)) problems.push(`--mode ${mode} must be all, controller or node`);

  const driverName = str('driverName') ?? 'filedriver.dev';
  if (!DRIVER_NAME.test(driverName)) problems.push(`--driver-name ${driverName} must be a domain-style name of at most 63 characters`);

  const defaultFormat = str('defaultFormat') ?? 'qcow2';
  if (!isFormat(defaultFormat)) problems.push(`--default-format ${defaultFormat} must be qcow2 or raw`);

  const logLevel = str('logLevel') ?? 'info';
  if (!LOG_LEVELS.includes(logLevel)) problems.push(`--log-level ${logLevel} must be one of ${LOG_LEVELS.join(', ')}`);

  const mounts = parseMounts(raw.mounts, problems);

  const defaultSizeText = str('defaultSize') ?? '1Gi';
  const defaultSizeBytes = parseSize(defaultSizeText);
  if (defaultSizeBytes === undefined || defaultSizeBytes < MiB) problems.push(`--default-size ${defaultSizeText} must be at least 1Mi (e.g. 1Gi)`);

  const number = (k: keyof typeof SETTINGS, def: number, ok: (n: number) => boolean, rule: string): number => {
    const text = str(k);
    if (text === undefined) return def;
    const n = Number(text);
    if (text.trim() === '' || !Number.isFinite(n) || !ok(n)) problems.push(`--${SETTINGS[k].flag} ${text} must be ${rule}`);
    return n;
  };
  const overSubscription = number('overSubscription', 1, (n) => n > 0, 'a number above 0 (1.0 = no over-commit)');
  const maxVolumesPerNode = number('maxVolumesPerNode', 0, (n) => Number.isInteger(n) && n >= 0, 'a whole number (0 = unlimited)');
  const healthCacheSeconds = number('healthCacheSeconds', 2, (n) => n >= 0 && n <= 300, 'between 0 and 300');

  const kubeletDir = str('kubeletDir') ?? '/var/lib/kubelet';
  if (!isAbsolute(kubeletDir)) problems.push(`--kubelet-dir ${kubeletDir} must be an absolute path`);
  const nodeId = str('nodeId') ?? hostname();
  if (nodeId === '' || nodeId.length > 256) problems.push('--node-id must be 1-256 characters');
  const metricsText = str('metricsAddress');
  const metricsAddress = metricsText === undefined ? undefined : parseListenAddress(metricsText);
  if (metricsText !== undefined && metricsAddress === undefined) {
    problems.push(`--metrics-address ${metricsText} must be HOST:PORT (e.g. 0.0.0.0:9810, [::1]:9810 or :9810), port 0-65535`);
  }

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

function parseMounts(value: string | string[] | undefined, problems: string[]): MountConfig[] {
  const items = value === undefined ? [] : Array.isArray(value) ? value : [value];
  if (items.length === 0) problems.push('at least one --mount NAME=PATH is required');
  const mounts: MountConfig[] = [];
  for (const item of items) {
    const eq = item.indexOf('=');
    const name = eq < 0 ? '' : item.slice(0, eq);
    const path = eq < 0 ? '' : item.slice(eq + 1);
    if (eq < 0) problems.push(`--mount ${item} must be NAME=PATH`);
    else if (!isValidMountName(name)) problems.push(`--mount ${item}: name ${JSON.stringify(name)} must be 1-40 of a-z 0-9 - (not starting or ending with -)`);
    else if (!isAbsolute(path)) problems.push(`--mount ${item}: path must be absolute`);
    else if (mounts.some((m) => m.name === name)) problems.push(`--mount ${name} is given twice`);
    else {
      const clean = normalize(path).replace(/\/+$/, '') || '/';
      // One share under two names, or one inside another, would count its space twice and
      // show one driver tree under two names.
      const clash = mounts.find((m) => m.path === clean || isInside(m.path, clean) || isInside(clean, m.path));
      if (clash !== undefined) problems.push(`--mount ${name}=${path} overlaps --mount ${clash.name}=${clash.path}; each share once, none inside another`);
      else mounts.push({ name, path: clean });
    }
  }
  return mounts;
}

function isInside(parent: string, child: string): boolean {
  return child.startsWith(parent === '/' ? '/' : `${parent}/`);
}

/** What the admin commands (import, move, export, list, doctor) need: they act on the mounts, not on a socket. */
export type AdminConfig = Pick<Config, 'driverName' | 'defaultFormat' | 'mounts' | 'overSubscription' | 'healthCacheSeconds'>;

/**
 * The admin commands' settings, from the same layers as serve's so one config
 * file serves both. Everything is validated as for serve except the endpoint,
 * which is serve's alone and so is not required here.
 */
export function buildAdminConfig(...layers: RawSettings[]): AdminConfig {
  const config = buildConfig(...layers, { endpoint: 'unix:///not-served-by-admin-commands' });
  const { driverName, defaultFormat, mounts, overSubscription, healthCacheSeconds } = config;
  return Object.freeze({ driverName, defaultFormat, mounts, overSubscription, healthCacheSeconds });
}
