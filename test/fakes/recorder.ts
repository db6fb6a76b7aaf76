/**
 * What every fake shares, after kubernetes' FakeMounter: a log of the calls
 * made (`actions`, in order, with their arguments) and failures a test plants
 * for a call (`failOn`), raised before the fake does anything.
 */
import { CommandFailed } from '../../src/system/command.js';

export interface Action<Op extends string = string> {
  op: Op;
  args: readonly unknown[];
}

interface Fault {
  op: string;
  error: (args: readonly unknown[]) => unknown;
  times: number;
  when: (args: readonly unknown[]) => boolean;
}

export class Recorder<Op extends string> {
  readonly actions: Action<Op>[] = [];
  private faults: Fault[] = [];

  /**
   * The next `times` calls of `op` (default: every one) for which `when` holds
   * throw `error` (an error, or a function of the call's arguments making one).
   */
  failOn(op: Op, error: unknown, options: { times?: number; when?: (args: readonly unknown[]) => boolean } = {}): this {
    const make = typeof error === 'function' ? (error as (args: readonly unknown[]) => unknown) : () => error;
    this.faults.push({ op, error: make, times: options.times ?? Infinity, when: options.when ?? (() => true) });
    return this;
  }

  /** The ops called so far, in order. */
  ops(): Op[] {
    return this.actions.map((a) => a.op);
  }

  /** Forgets the log and the planted failures. */
  reset(): void {
    this.actions.length = 0;
    this.faults = [];
  }

  /** Logs a call, then throws a planted failure if one applies. */
  protected act(op: Op, ...args: unknown[]): void {
    this.actions.push({ op, args });
    const fault = this.faults.find((f) => f.op === op && f.times > 0 && f.when(args));
    if (fault === undefined) return;
    fault.times--;
    throw fault.error(args);
  }
}

/** A tool's failure as the real adapters see it (exit code, stderr), e.g. `toolFailed('qemu-img', 'No space left on device')`. */
export function toolFailed(tool: string, stderr: string, exitCode = 1, ...argv: string[]): CommandFailed {
  return new CommandFailed([tool, ...argv], exitCode, stderr);
}
