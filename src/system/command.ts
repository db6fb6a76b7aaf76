/**
 * The only place that starts external tools. Argument arrays, never a shell;
 * every run has a timeout and its stderr captured. Adapters receive a `Runner`
 * so tests can swap in a fake.
 */
import { execa } from 'execa';
import type { Logger } from 'pino';

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

export function makeRunner(log: Logger): Runner {
  return async (argv, options = {}) => {
    const [file, ...args] = argv;
    if (file === undefined) throw new Error('empty argv');
    const started = performance.now();
    const result = await execa(file, args, {
      reject: false,
      timeout: options.timeoutMs ?? 60_000,
      stripFinalNewline: true,
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
