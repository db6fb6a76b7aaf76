/** The qemu-img contract against the real qemu-img (no root: images on a temp directory) and against the fake. */
import { spawn, execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { pino } from 'pino';
import type { Format } from '../../src/domain/parameters.js';
import { makeRunner, onPath } from '../../src/system/command.js';
import { makeQemuImg } from '../../src/system/qemu-img.js';
import { FakeQemuImg } from '../fakes/qemu-img.js';
import { qemuImgContract } from './qemu-img.contract.js';

const run = promisify(execFile);

qemuImgContract('the fake', () => {
  const img = new FakeQemuImg();
  return {
    img,
    async hold(path) {
      const release = await img.hold(path);
      return async () => release();
    },
    write: (path, format, offset, length, pattern) => img.write(path, format, offset, Buffer.alloc(length, pattern)),
  };
});

const haveQemu = onPath('qemu-img') !== undefined && onPath('qemu-io') !== undefined;

if (haveQemu) {
  qemuImgContract('the real qemu-img', () => {
    const img = makeQemuImg(makeRunner(pino({ level: 'silent' })));
    return {
      img,
      /**
       * qemu-io opens the image read-write and sleeps: qemu's write lock is held until it is killed.
       * It is ready once it prints the image's length (line-buffered by stdbuf). Polling inUse()
       * instead would race it: a probe's own lock, taken while qemu-io opens, makes qemu-io fail.
       */
      async hold(path: string, format: Format) {
        const child = spawn('stdbuf', ['-oL', 'qemu-io', '-f', format, '-c', 'length', '-c', 'sleep 60000', path], {
          stdio: ['ignore', 'pipe', 'pipe'],
        });
        let stderr = '';
        child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
        const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
        await new Promise<void>((resolve, reject) => {
          child.stdout.once('data', () => resolve());
          void exited.then(() => reject(new Error(`qemu-io could not hold ${path}: ${stderr}`)));
        });
        return async () => {
          child.kill('SIGKILL');
          await exited;
        };
      },
      async write(path, format, offset, length, pattern) {
        await run('qemu-io', ['-f', format, '-c', `write -q -P ${pattern} ${offset} ${length}`, path]);
      },
    };
  });
}
