import { describe, expect, it } from 'vitest';
import { mapLimit } from '../../src/domain/concurrency.js';

describe('mapLimit', () => {
  it('keeps order and never runs more than the limit at once', async () => {
    let running = 0;
    let most = 0;
    const out = await mapLimit(Array.from({ length: 50 }, (_, i) => i), 4, async (i) => {
      running++;
      most = Math.max(most, running);
      await new Promise((r) => setImmediate(r));
      running--;
      return i * 2;
    });
    expect(out).toEqual(Array.from({ length: 50 }, (_, i) => i * 2));
    expect(most).toBe(4);
    expect(await mapLimit([], 4, async () => 1)).toEqual([]);
  });
});
