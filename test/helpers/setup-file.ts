/**
 * Runs in every test file: a driver a failed test never stopped is killed
 * when its file ends, rather than outliving the run with its shares in use.
 */
import { afterAll } from 'vitest';
import { killStrayDrivers } from './server.js';

afterAll(async () => {
  const strays = await killStrayDrivers();
  if (strays.length > 0) throw new Error(`drivers still running after the file's tests (killed now):\n${strays.join('\n')}`);
});
