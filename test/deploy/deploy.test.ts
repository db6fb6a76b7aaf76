/**
 * deploy/: exactly what `npm run gen:deploy` makes of the chart's defaults,
 * buildable by kustomize (the real one, inside the bundled kubectl) into a
 * consistent install, and examples that fit it.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
// @ts-expect-error: a plain ESM script without type declarations
import { generate, stale } from '../../scripts/gen-deploy.mjs';
import { fakeCluster, SNAPSHOT_CRDS } from './apiserver.js';
import { checkInstall } from './install.js';
import { all, one, parseObjects, ROOT, tool, type K8s } from './render.js';

const DEPLOY = join(ROOT, 'deploy');
const read = (file: string) => parseObjects(readFileSync(join(DEPLOY, file), 'utf8'));
const key = (o: K8s) => `${o['kind']}/${o['metadata'].namespace ?? ''}/${o['metadata'].name}`;

describe('deploy/', () => {
  const files = generate() as Map<string, string>;

  it('is what npm run gen:deploy makes of the chart', () => {
    expect(stale(files)).toEqual([]);
    const yamls = [...readdirSync(DEPLOY), ...readdirSync(join(DEPLOY, 'optional')).map((f) => `optional/${f}`)].filter((f) => f.endsWith('.yaml'));
    expect(yamls.sort()).toEqual([...files.keys()].sort());
  });

  it('applies (kubectl --dry-run=client) to a cluster without the snapshot CRDs; the snapshot class waits in optional/', async () => {
    const bare = await fakeCluster();
    try {
      const run = await bare.kubectl(['apply', '--dry-run=client', '--validate=false', '-k', DEPLOY]);
      expect(run.stderr).toBe('');
      expect(run.ok).toBe(true);
      expect(run.stdout).toMatch(/^deployment\.apps\/filedriver-controller created \(dry run\)$/m);
      expect(run.stdout).toMatch(/^csidriver\.storage\.k8s\.io\/filedriver\.dev created \(dry run\)$/m);
      // What deploy/ used to contain fails there, as the issue reported.
      const optional = await bare.kubectl(['apply', '--dry-run=client', '--validate=false', '-f', join(DEPLOY, 'optional/snapshotclass.yaml')]);
      expect(optional.ok).toBe(false);
      expect(optional.stderr).toMatch(/no matches for kind "VolumeSnapshotClass" in version "snapshot\.storage\.k8s\.io\/v1"/);
    } finally {
      await bare.close();
    }
    const withCrds = await fakeCluster(SNAPSHOT_CRDS);
    try {
      const run = await withCrds.kubectl(['apply', '--dry-run=client', '--validate=false', '-f', join(DEPLOY, 'optional/snapshotclass.yaml')]);
      expect(run.stdout).toBe('volumesnapshotclass.snapshot.storage.k8s.io/filedriver created (dry run)\n');
    } finally {
      await withCrds.close();
    }
  });

  it('builds with kustomize into a consistent install in its own privileged namespace', () => {
    const run = tool(['kubectl', 'kustomize', DEPLOY]);
    expect(run.stderr).toBe('');
    const built = parseObjects(run.stdout);
    const listed = [...files.keys()].filter((f) => f !== 'kustomization.yaml' && !f.startsWith('optional/')).flatMap(read);
    expect(built.map(key).sort()).toEqual(listed.map(key).sort());
    expect(checkInstall(built).problems).toEqual([]);
    const ns = one(built, 'Namespace', 'filedriver');
    expect(ns['metadata'].labels['pod-security.kubernetes.io/enforce']).toBe('privileged');
    for (const o of built) if (o['kind'] !== 'Namespace' && o['metadata'].namespace !== undefined) expect(o['metadata'].namespace).toBe('filedriver');
    // Helm's bookkeeping does not belong in kubectl-applied objects.
    expect(run.stdout).not.toMatch(/helm\.sh\/chart|managed-by: Helm/);
  });
});

describe('deploy/examples', () => {
  const install = [...readdirSync(DEPLOY), 'optional/snapshotclass.yaml'].filter((f) => f.endsWith('.yaml') && f !== 'kustomization.yaml').flatMap(read);
  const classes = all(install, 'StorageClass').map((o) => o['metadata'].name);
  const driver = one(install, 'CSIDriver')['metadata'].name;
  const mounts = checkInstall(install).mounts;
  const examples = readdirSync(join(DEPLOY, 'examples')).map((f) => [f, parseObjects(readFileSync(join(DEPLOY, 'examples', f), 'utf8'))] as const);

  it.each(examples)('%s uses only classes, mounts and claims that exist', (_file, objects) => {
    expect(objects.length).toBeGreaterThan(0);
    const claims = new Set(examples.flatMap(([, os]) => all(os, 'PersistentVolumeClaim').map((c) => c['metadata'].name)));
    for (const pvc of all(objects, 'PersistentVolumeClaim')) {
      expect(classes).toContain(pvc['spec'].storageClassName);
      const source = pvc['spec'].dataSource;
      if (source?.kind === 'PersistentVolumeClaim') expect(claims).toContain(source.name);
    }
    for (const pod of all(objects, 'Pod')) {
      for (const v of pod['spec'].volumes) expect(claims).toContain(v.persistentVolumeClaim.claimName);
    }
    for (const snap of all(objects, 'VolumeSnapshot')) {
      expect(snap['spec'].volumeSnapshotClassName).toBe(one(install, 'VolumeSnapshotClass')['metadata'].name);
      expect(claims).toContain(snap['spec'].source.persistentVolumeClaimName);
    }
    for (const vac of all(objects, 'VolumeAttributesClass')) {
      expect(vac['driverName']).toBe(driver);
      for (const [k, v] of Object.entries(vac['parameters'] as Record<string, string>)) {
        if (k === 'mount') expect(Object.keys(mounts)).toContain(v);
        else if (k === 'format') expect(['qcow2', 'raw']).toContain(v);
        else expect.unreachable(`VolumeAttributesClass parameter ${k} is not mutable`);
      }
    }
  });

  it('shows a block volume as a device and a filesystem volume as a mount', () => {
    const block = examples.find(([f]) => f === 'block.yaml')?.[1] ?? [];
    expect(one(block, 'PersistentVolumeClaim')['spec'].volumeMode).toBe('Block');
    expect(one(block, 'Pod')['spec'].containers[0].volumeDevices).toEqual([{ name: 'disk', devicePath: '/dev/xvda' }]);
    const fs = examples.find(([f]) => f === 'filesystem.yaml')?.[1] ?? [];
    expect(one(fs, 'Pod')['spec'].containers[0].volumeMounts).toEqual([{ name: 'data', mountPath: '/data' }]);
  });
});
