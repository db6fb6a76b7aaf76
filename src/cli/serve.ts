/** `filedriver serve`: the CSI server. */
import { parseArgs } from 'node:util';
import { pino } from 'pino';
import { buildApp } from '../app.js';
import { buildConfig, envSettings, readConfigFile, SETTINGS, type RawSettings } from '../config.js';
import { startServer } from '../csi/server.js';

const FLAG_OPTIONS = {
  ...Object.fromEntries(
    Object.values(SETTINGS).map((s) => [s.flag, s.flag === 'mount' ? { type: 'string', multiple: true } : { type: 'string' }]),
  ),
  config: { type: 'string' },
  help: { type: 'boolean', short: 'h' },
} as Record<string, { type: 'string' | 'boolean'; multiple?: boolean; short?: string }>;

export function serveHelp(): string {
  const lines = Object.values(SETTINGS).map((s) => `  --${s.flag.padEnd(22)} ${s.help}  [env ${s.env[0] ?? ''}]`);
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

export async function serve(argv: string[]): Promise<number> {
  const { values } = parseArgs({ args: argv, options: FLAG_OPTIONS, strict: true, allowPositionals: false });
  if (values['help'] === true) {
    process.stdout.write(`${serveHelp()}\n`);
    return 0;
  }
  const flags: RawSettings = {};
  for (const [key, spec] of Object.entries(SETTINGS) as [keyof typeof SETTINGS, { flag: string }][]) {
    const v = values[spec.flag];
    if (typeof v === 'string' || Array.isArray(v)) flags[key] = v as string | string[];
  }
  const configFile = (values['config'] as string | undefined) ?? process.env['FILEDRIVER_CONFIG'];
  const config = buildConfig(configFile === undefined ? {} : readConfigFile(configFile), envSettings(process.env), flags);

  const log = pino({ level: config.logLevel, base: { driver: config.driverName, node: config.nodeId }, redact: ['*.secrets', 'secrets'] });
  log.info({ mode: config.mode, mounts: config.mounts, defaultFormat: config.defaultFormat }, 'starting filedriver');
  const app = buildApp(config, log);
  await app.prepare();
  const server = await startServer(config.socketPath, app.services, log);

  await new Promise<void>((resolve) => {
    const stop = (signal: string) => {
      log.info({ signal }, 'shutting down');
      resolve();
    };
    process.once('SIGTERM', () => stop('SIGTERM'));
    process.once('SIGINT', () => stop('SIGINT'));
  });
  await server.shutdown();
  log.info('stopped');
  return 0;
}
