#!/usr/bin/env node
/** `filedriver`: one binary, the CSI server and the admin commands. */
import { version } from './app.js';
import { ConfigError } from './config.js';
import { serve } from './cli/serve.js';

const USAGE = `Usage: filedriver <command> [options]

Commands:
  serve       run the CSI server (see filedriver serve --help)

Options:
  --help      show this help
  --version   print the version
`;

async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  switch (command) {
    case undefined:
    case '--help':
    case '-h':
    case 'help':
      process.stdout.write(USAGE);
      return command === undefined ? 2 : 0;
    case '--version':
    case '-v':
      process.stdout.write(`filedriver ${version()}\n`);
      return 0;
    case 'serve':
      return serve(rest);
    default:
      process.stderr.write(`filedriver: unknown command ${command}\n\n${USAGE}`);
      return 2;
  }
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (e: unknown) => {
    if (e instanceof ConfigError) {
      for (const p of e.problems) process.stderr.write(`filedriver: ${p}\n`);
    } else {
      process.stderr.write(`filedriver: ${e instanceof Error ? e.message : String(e)}\n`);
    }
    process.exit(e instanceof ConfigError ? 2 : 1);
  },
);
