#!/usr/bin/env node
/** `filedriver`: one binary, the CSI server and the admin commands. */
import { version } from './app.js';
import { ConfigError } from './config.js';
import { dataPlaneCommand } from './cli/data-plane.js';
import { doctorCommand } from './cli/doctor.js';
import { exportCommand } from './cli/export.js';
import { importCommand } from './cli/import.js';
import { listCommand } from './cli/list.js';
import { moveCommand } from './cli/move.js';
import { serve } from './cli/serve.js';

const USAGE = `Usage: filedriver <command> [options]

Commands:
  serve       run the CSI server (see filedriver serve --help)
  data-plane  run the node's qemu-storage-daemon in the foreground (the chart's data-plane pods)

Admin commands (act on the mounts directly; each has --help):
  import      adopt an image on a mount as a volume and print a PersistentVolume for it
  move        move a volume to another mount, keeping its id
  export      copy a volume's image to a file
  list        the volumes and snapshots on each mount
  doctor      check tools, mounts and their contents; --fix repairs what is safe

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
    case 'data-plane':
      return dataPlaneCommand(rest);
    case 'import':
      return importCommand(rest);
    case 'move':
      return moveCommand(rest);
    case 'export':
      return exportCommand(rest);
    case 'list':
      return listCommand(rest);
    case 'doctor':
      return doctorCommand(rest);
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
