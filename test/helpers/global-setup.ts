/**
 * Around the whole suite. Before: this run's temp files go under a directory
 * of its own (TMPDIR, which the test workers and the drivers they start
 * inherit), because other runs may be going on on the same machine. After:
 * nothing this run made may still be attached, mounted or running — a leak
 * is a bug in a cleanup path. What leaked is reported, fails the run, and is
 * then freed, so that it does not pile up on the machine.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describeHolder, holders, sweepHolders } from './holders.js';

export function setup(): () => void {
  const runDir = mkdtempSync(join(tmpdir(), 'fdtest-run-'));
  process.env['TMPDIR'] = runDir;
  return () => {
    const ours = (text: string) => text.includes(`${runDir}/`);
    const found = process.getuid?.() === 0 ? holders(ours).map(describeHolder) : [];
    if (found.length === 0) {
      rmSync(runDir, { recursive: true, force: true });
      return;
    }
    sweepHolders(ours);
    if (holders(ours).length === 0) rmSync(runDir, { recursive: true, force: true });
    // vitest prints an error thrown here but still exits 0: set the exit code ourselves.
    process.exitCode = 1;
    throw new Error(`test suite leaked system resources (freed now):\n${found.join('\n')}`);
  };
}
