import { describe, expect, it } from 'vitest';
import { mapLimit, Serial } from '../../src/domain/concurrency.js';

describe('mapLimit', () => {
  it('keeps order and never runs more than the limit at once', async () => {
    let running = 0;
    let most = 0;
    const out = await mapLimit(
      Array.from({ length: 50 }, (_, i) => i),
      4,
      async (i) => {
        running++;
        most = Math.max(most, running);
        await new Promise((r) => setImmediate(r));
        running--;
        return i * 2;
      },
    );
    expect(out).toEqual(Array.from({ length: 50 }, (_, i) => i * 2));
    expect(most).toBe(4);
    expect(await mapLimit([], 4, async () => 1)).toEqual([]);
  });
});

describe('Serial', () => {
  const tick = () => new Promise((r) => setImmediate(r));

  it('runs work of one key one at a time, in order, past a failure; other keys do not wait', async () => {
    const serial = new Serial();
    const log: string[] = [];
    let running = 0;
    let most = 0;
    const job =
      (name: string, fail = false) =>
      async () => {
        running++;
        most = Math.max(most, running);
        log.push(`start ${name}`);
        await tick();
        log.push(`end ${name}`);
        running--;
        if (fail) throw new Error(name);
        return name;
      };
    const a = serial.run('k', job('a'));
    const b = serial.run('k', job('b', true));
    const c = serial.run('k', job('c'));
    const other = serial.run('other', async () => {
      log.push('other');
      return 'other';
    });
    expect(await other).toBe('other');
    expect(await a).toBe('a');
    await expect(b).rejects.toThrow('b');
    expect(await c).toBe('c');
    expect(log.filter((l) => l !== 'other')).toEqual(['start a', 'end a', 'start b', 'end b', 'start c', 'end c']);
    // 'other' did not wait behind a's queue.
    expect(log.indexOf('other')).toBeLessThan(log.indexOf('end a'));
    expect(most).toBe(1);
  });
});
