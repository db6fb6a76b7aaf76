/**
 * What the driver relies on from Files.reflink, run against the real adapter
 * (`cp --reflink=always` on a temp directory, and on an xfs with reflinks when
 * root can make one) and against FakeFiles with and without reflinks: either an
 * independent copy of the same bytes and true, or false and no target at all.
 */
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import type { Files } from '../../src/system/files.js';

export interface FilesSubject {
  files: Files;
  /** A directory on the filesystem under test. */
  dir: string;
  /** Whether reflinks must succeed there (true), must not (false), or either (undefined: the machine's filesystem). */
  reflinks: boolean | undefined;
  cleanup?: () => void;
}

export function filesContract(name: string, make: () => FilesSubject): void {
  describe(`Files contract: ${name}`, () => {
    const cleanups: (() => void)[] = [];
    afterEach(() => {
      for (const c of cleanups.splice(0)) c();
    });
    function world() {
      const s = make();
      const dir = mkdtempSync(join(s.dir, 'fdtest-files-'));
      cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
      if (s.cleanup !== undefined) cleanups.push(s.cleanup);
      return { ...s, at: (rel: string) => join(dir, rel) };
    }

    it('either makes an independent copy of the same bytes, or answers false and leaves no target', async () => {
      const w = world();
      const data = Buffer.alloc(256 * 1024, 0x5a);
      writeFileSync(w.at('source'), data);
      const made = await w.files.reflink(w.at('source'), w.at('target'));
      if (w.reflinks !== undefined) expect(made).toBe(w.reflinks);
      if (made) {
        expect(readFileSync(w.at('target')).equals(data)).toBe(true);
        writeFileSync(w.at('target'), 'changed');
        expect(readFileSync(w.at('source')).equals(data)).toBe(true);
      } else {
        expect(existsSync(w.at('target'))).toBe(false);
      }
    });

    it('answers false, leaving nothing, for a missing source or a missing target directory', async () => {
      const w = world();
      expect(await w.files.reflink(w.at('none'), w.at('target'))).toBe(false);
      expect(existsSync(w.at('target'))).toBe(false);
      writeFileSync(w.at('source'), 'x');
      expect(await w.files.reflink(w.at('source'), w.at('no-dir/target'))).toBe(false);
    });
  });
}
