/**
 * The nfs share pod's script, as the chart renders it, run for real (as root)
 * with its two paths moved into a temp directory: /nfs (what the kubelet
 * mounted) is a tmpfs, /shares (the host directory) a plain one. It binds the
 * export onto /shares/<name>, replaces a bind left by a predecessor killed
 * before it could unbind, and unbinds on SIGTERM.
 */
import { execFileSync, spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { isRoot, rootOnlyReason } from '../helpers/root.js';
import { all, render, type K8s } from './render.js';

const mountsAt = (path: string) => readFileSync('/proc/self/mountinfo', 'utf8').split('\n').filter((l) => l.split(' ')[4] === path).length;

function script(): string {
  const share = all(render('nfs-values.yaml'), 'DaemonSet').find((d) => d['metadata'].name === 'fd-filedriver-nfs-filer1') as K8s;
  const c = share['spec'].template.spec.containers[0] as K8s;
  expect(c['command']).toEqual(['/bin/sh', '-c']);
  return (c['args'] as string[])[0] as string;
}

describe.skipIf(!isRoot)('nfs share pod script', () => {
  let base = '';
  afterEach(() => {
    for (const p of [join(base, 'shares/filer1'), join(base, 'nfs')]) {
      while (mountsAt(p) > 0) execFileSync('umount', ['-l', p]);
    }
    rmSync(base, { recursive: true, force: true });
  });

  it('binds the export onto the host directory, replaces a stale bind, and unbinds on SIGTERM', async () => {
    rootOnlyReason();
    base = mkdtempSync(join(tmpdir(), 'fdtest-share-'));
    const nfs = join(base, 'nfs');
    const target = join(base, 'shares/filer1');
    mkdirSync(nfs);
    mkdirSync(target, { recursive: true });
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=1m', 'fdtest-share', nfs]);
    writeFileSync(join(nfs, 'export.txt'), 'from the filer\n');
    // A predecessor's bind, still there (it was killed before its trap ran).
    execFileSync('mount', ['--bind', nfs, target]);
    execFileSync('mount', ['--bind', nfs, target]);
    const text = script().replaceAll('/shares/', `${base}/shares/`).replaceAll('/nfs', nfs);
    const child = spawn('sh', ['-c', text], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (out += d.toString()));
    const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
    for (let i = 0; i < 100 && !out.includes('bound at'); i++) await new Promise((r) => setTimeout(r, 50));
    expect(out).toMatch(/nfs share filer1 \(filer1\.example\.com:\/export\/k8s\) bound at \/var\/lib\/filedriver-shares\/storage\/fd-filedriver\/filer1/);
    // Exactly one bind: the stale ones were removed first.
    expect(mountsAt(target)).toBe(1);
    expect(readFileSync(join(target, 'export.txt'), 'utf8')).toBe('from the filer\n');
    child.kill('SIGTERM');
    expect(await exited).toBe(0);
    expect(mountsAt(target)).toBe(0);
  });
});
