/**
 * Running tools from the bench process. Floors spawn their tools the same way
 * the driver does (a child process per tool, no shell), so a ratio against a
 * floor compares like with like: the spawn cost is in both.
 */
import { execFile } from 'node:child_process';
import { findQemu, QEMU_TOOLS, type QemuTool } from '../../src/system/qemu-tools.js';

/** The qemu the driver runs (FILEDRIVER_QEMU, else its default): floors must use the same one. */
export const qemu = findQemu(process.env['FILEDRIVER_QEMU']);
const isQemuTool = (tool: string): tool is QemuTool => (QEMU_TOOLS as readonly string[]).includes(tool);
const env = { ...process.env, ...qemu.env };

export interface ShResult {
  stdout: string;
  stderr: string;
}

export class ShFailed extends Error {
  constructor(
    readonly argv: readonly string[],
    readonly exitCode: number | string | null | undefined,
    readonly stderr: string,
  ) {
    super(`${argv.join(' ')}: exit ${String(exitCode)}: ${stderr.trim().split('\n').slice(-3).join('; ')}`);
    this.name = 'ShFailed';
  }
}

export function sh(argv: readonly string[], options: { timeoutMs?: number } = {}): Promise<ShResult> {
  const [tool, ...rest] = argv;
  const [file, ...args] = tool !== undefined && isQemuTool(tool) ? qemu.argv(tool, rest) : argv;
  if (file === undefined) throw new Error('empty argv');
  return new Promise((resolve, reject) => {
    execFile(file, args, { encoding: 'utf8', env, maxBuffer: 64 * 1024 * 1024, timeout: options.timeoutMs ?? 600_000 }, (err, stdout, stderr) => {
      if (err) reject(new ShFailed(argv, (err as NodeJS.ErrnoException & { code?: number | string }).code, stderr || err.message));
      else resolve({ stdout, stderr });
    });
  });
}

/** Milliseconds `fn` took. */
export async function timed(fn: () => Promise<unknown>): Promise<number> {
  const t0 = performance.now();
  await fn();
  return performance.now() - t0;
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/**
 * Milliseconds `fn` took, started with nothing waiting for writeback: the shares are files on the
 * host, and the first fsync after a bulk write (the driver fsyncs its metadata) would otherwise pay
 * for flushing all of it — a cost of this loop-on-a-file setup, not of the operation.
 */
export async function settled(fn: () => Promise<unknown>): Promise<number> {
  await sh(['sync']);
  return timed(fn);
}

/** Runs both sides of run `r`, swapping their order every other run so drift hits both alike. */
export async function alternate(r: number, first: () => Promise<void>, second: () => Promise<void>): Promise<void> {
  if (r % 2 === 0) {
    await first();
    await second();
  } else {
    await second();
    await first();
  }
}

/** Runs `count` tasks with at most `width` in flight; returns each task's duration in ms (in task order). */
export async function pool(count: number, width: number, task: (i: number) => Promise<unknown>): Promise<number[]> {
  const durations = new Array<number>(count).fill(0);
  let next = 0;
  const worker = async (): Promise<void> => {
    for (let i = next++; i < count; i = next++) durations[i] = await timed(() => task(i));
  };
  await Promise.all(Array.from({ length: Math.min(width, count) }, () => worker()));
  return durations;
}
