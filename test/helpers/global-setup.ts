/**
 * After the whole suite: nothing the tests created may still be attached,
 * mounted or running. A leak here is a bug in a cleanup path.
 */
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';

function leaks(): string[] {
  const found: string[] = [];
  const mountinfo = readFileSync('/proc/self/mountinfo', 'utf8');
  for (const line of mountinfo.split('\n')) {
    if (/fdtest-|filedriver/.test(line)) found.push(`mount: ${line}`);
  }
  let loops = '';
  try {
    loops = execFileSync('losetup', ['-a'], { encoding: 'utf8' });
  } catch {
    loops = '';
  }
  for (const line of loops.split('\n')) if (/fdtest-|filedriver/.test(line)) found.push(`loop: ${line}`);
  let procs = '';
  try {
    procs = execFileSync('pgrep', ['-a', '-f', 'qemu-storage-daemon|qemu-nbd'], { encoding: 'utf8' });
  } catch {
    procs = '';
  }
  for (const line of procs.split('\n')) if (/fdtest-/.test(line)) found.push(`process: ${line}`);
  return found;
}

export function setup(): () => void {
  return () => {
    if (process.getuid?.() !== 0) return;
    const found = leaks();
    if (found.length > 0) {
      // vitest prints an error thrown here but still exits 0: set the exit code ourselves.
      process.exitCode = 1;
      throw new Error(`test suite leaked system resources:\n${found.join('\n')}`);
    }
  };
}
