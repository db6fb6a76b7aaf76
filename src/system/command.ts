/**
 * The only place that starts external tools. Argument arrays, never a shell;
 * every run has a timeout and its stderr captured. Adapters receive a `Runner`
 * so tests can swap in a fake.
 */
import { execa } from 'execa';
import { accessSync, constants } from 'node:fs';
import { delimiter, join } from 'node:path';
import type { Logger } from 'pino';
import { QEMU_TOOLS, systemQemu, type QemuInstall, type QemuTool } from './qemu-tools.js';

export interface RunOptions {
  /** Milliseconds before the tool is killed (default 60 s). */
  timeoutMs?: number;
  /** Text written to the tool's stdin. */
  input?: string;
  /** Show the tool's stdout on ours (progress bars of admin commands). */
  inheritOutput?: boolean;
}

export interface RunResult {
  stdout: string;
  stderr: string;
}

export type Runner = (argv: readonly string[], options?: RunOptions) => Promise<RunResult>;

/** A tool that could not be started, exited non-zero, or timed out. */
export class CommandFailed extends Error {
  constructor(
    readonly argv: readonly string[],
    readonly exitCode: number | undefined,
    readonly stderr: string,
    options?: { cause?: unknown },
  ) {
    super(`${loggable(argv).join(' ')}: ${summarise(stderr) || `exit code ${String(exitCode)}`}`, options);
    this.name = 'CommandFailed';
  }
}

/** The last meaningful lines of a tool's stderr, short enough for a gRPC message. */
export function summarise(stderr: string, maxChars = 400): string {
  const lines = stderr
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l.length > 0);
  const tail = lines.slice(-3).join('; ');
  return tail.length > maxChars ? `…${tail.slice(-maxChars)}` : tail;
}

/** Argv as it may be logged: values of credential-like options (mount -o password=…) hidden. */
export function loggable(argv: readonly string[]): string[] {
  return argv.map((a) => a.replace(/\b(pass(?:word)?|secret|token|key|cred\w*)=[^,\s]*/gi, '$1=***'));
}

export interface RunnerOptions {
  /**
   * Tools get SIGKILL when this process dies (PR_SET_PDEATHSIG through
   * util-linux `setpriv`, as Node cannot call prctl). For the controller: a
   * killed controller's `qemu-img create` would otherwise keep filling a temp
   * entry that its restart removes, holding the space until it finishes.
   * Not for the node: its daemons fork away from it (the setting does not
   * survive a fork), and an mkfs cut short would leave a half-made signature.
   */
  dieWithParent?: boolean;
  /** Which qemu-img and qemu-storage-daemon to run (default: the system's). */
  qemu?: QemuInstall;
}

/** Where `name` is on PATH, if it is. */
export function onPath(name: string): string | undefined {
  for (const dir of (process.env['PATH'] ?? '').split(delimiter)) {
    const file = join(dir, name);
    try {
      accessSync(file, constants.X_OK);
      return file;
    } catch {
      // not here
    }
  }
  return undefined;
}

export function makeRunner(log: Logger, runnerOptions: RunnerOptions = {}): Runner {
  const setpriv = runnerOptions.dieWithParent === true ? onPath('setpriv') : undefined;
  if (runnerOptions.dieWithParent === true && setpriv === undefined)
    log.warn('setpriv (util-linux) is not installed: tools will outlive a killed controller');
  const qemu = runnerOptions.qemu ?? systemQemu;
  const isQemu = (name: string | undefined): name is QemuTool => QEMU_TOOLS.includes(name as QemuTool);
  return async (argv, options = {}) => {
    // The logged and reported argv stays the tool's own; only the spawn goes through setpriv and qemu's loader.
    const tool = isQemu(argv[0]) ? qemu.argv(argv[0], argv.slice(1)) : argv;
    const [file, ...args] = setpriv === undefined ? tool : [setpriv, '--pdeathsig', 'KILL', '--', ...tool];
    if (file === undefined) throw new Error('empty argv');
    const started = performance.now();
    const result = await execa(file, args, {
      reject: false,
      timeout: options.timeoutMs ?? 60_000,
      stripFinalNewline: true,
      ...(isQemu(argv[0]) ? { env: qemu.env } : {}),
      ...(options.inheritOutput === true ? { stdout: 'inherit' as const } : {}),
      ...(options.input === undefined ? { stdin: 'ignore' as const } : { input: options.input }),
    });
    const durationMs = Math.round(performance.now() - started);
    if (result.failed) {
      const stderr = result.timedOut ? `timed out after ${String(options.timeoutMs ?? 60_000)} ms` : result.stderr;
      // Debug only: some exit codes are answers (blkid 2 = nothing found); a real
      // failure is logged once, by the RPC that it fails, with this stderr.
      log.debug({ argv: loggable(argv), exitCode: result.exitCode, stderr: summarise(stderr), durationMs }, 'command failed');
      throw new CommandFailed(argv, result.exitCode, stderr || (result.shortMessage ?? ''), { cause: result.cause });
    }
    log.debug({ argv: loggable(argv), durationMs }, 'command');
    return { stdout: typeof result.stdout === 'string' ? result.stdout : '', stderr: result.stderr };
  };
}
