/** `filedriver serve`: the CSI server. */
import { pino } from 'pino';
import { buildApp } from '../app.js';
import { buildConfig, envSettings, readConfigFile, SETTINGS, type Config, type RawSettings } from '../config.js';
import { startServer } from '../csi/server.js';
import { startMetricsServer } from '../metrics.js';
import { parseCommand } from './context.js';

const FLAG_OPTIONS = {
  ...Object.fromEntries(Object.values(SETTINGS).map((s) => [s.flag, s.flag === 'mount' ? { type: 'string', multiple: true } : { type: 'string' }])),
  config: { type: 'string' },
  help: { type: 'boolean', short: 'h' },
} as Record<string, { type: 'string' | 'boolean'; multiple?: boolean; short?: string }>;

export function serveHelp(): string {
  const lines = Object.values(SETTINGS).map((s) => `  --${s.flag.padEnd(22)} ${s.help}  [env ${s.env[0]}]`);
  return [
    'Usage: filedriver serve --endpoint unix:///path/csi.sock --mount NAME=PATH [--mount ...] [options]',
    '',
    'Serves the CSI Identity, Controller and Node services on a unix socket.',
    'Settings come from flags, then environment variables, then --config FILE (YAML or JSON).',
    '',
    ...lines,
    `  --${'config'.padEnd(22)} YAML/JSON file with the same settings (camelCase keys)  [env FILEDRIVER_CONFIG]`,
  ].join('\n');
}

/**
 * serve's flags, environment and --config file → Config, or 'help'. Throws a
 * ConfigError (exit 2) on an unknown flag, an unreadable config file or invalid
 * settings. Also how the deployment tests check the manifests' container args.
 */
export function parseServe(argv: string[], env: NodeJS.ProcessEnv): Config | 'help' {
  const { values } = parseCommand('serve', { args: argv, options: FLAG_OPTIONS, strict: true, allowPositionals: false });
  if (values['help'] === true) return 'help';
  const flags: RawSettings = {};
  for (const [key, spec] of Object.entries(SETTINGS) as [keyof typeof SETTINGS, { flag: string }][]) {
    const v = values[spec.flag];
    if (typeof v === 'string' || Array.isArray(v)) flags[key] = v as string | string[];
  }
  const configFile = (values['config'] as string | undefined) ?? env['FILEDRIVER_CONFIG'];
  return buildConfig(configFile === undefined ? {} : readConfigFile(configFile), envSettings(env), flags);
}

export async function serve(argv: string[]): Promise<number> {
  const config = parseServe(argv, process.env);
  if (config === 'help') {
    process.stdout.write(`${serveHelp()}\n`);
    return 0;
  }

  const log = pino({ level: config.logLevel, base: { driver: config.driverName, node: config.nodeId }, redact: ['*.secrets', 'secrets'] });
  // Signals are taken from the start: one that arrives while start-up runs ends it with exit 0 too.
  let signalled: string | undefined;
  const stopped = new Promise<void>((resolve) => {
    const stop = (signal: string) => {
      signalled = signal;
      log.info({ signal }, 'shutting down');
      resolve();
    };
    process.once('SIGTERM', () => stop('SIGTERM'));
    process.once('SIGINT', () => stop('SIGINT'));
  });
  log.info({ mode: config.mode, mounts: config.mounts, defaultFormat: config.defaultFormat }, 'starting filedriver');
  const app = buildApp(config, log);
  await app.prepare();
  if (signalled !== undefined) {
    await app.close();
    return 0;
  }
  // Metrics first: a bad --metrics-address stops start-up before the socket appears.
  const metricsServer =
    config.metricsAddress === undefined ? undefined : await startMetricsServer(config.metricsAddress, app.metrics, app.ready, log);
  const server = await startServer(config.socketPath, app.services, log);

  await stopped;
  await server.shutdown();
  await app.close();
  await metricsServer?.close();
  log.info('stopped');
  return 0;
}
