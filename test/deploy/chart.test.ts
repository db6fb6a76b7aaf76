/**
 * charts/filedriver with the real Helm binary: lint, render the defaults and
 * every documented option set (ci/*-values.yaml) into a consistent install,
 * and refuse invalid values with a message that names the problem.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { checkInstall } from './install.js';
import { all, CHART, CI_VALUES, container, flag, helm, one, podSpec, render, tool, type K8s } from './render.js';

const defaults = parse(readFileSync(join(CHART, 'values.yaml'), 'utf8')) as K8s;

describe('helm lint', () => {
  it.each([undefined, ...CI_VALUES])('passes --strict with %s', (values) => {
    const run = helm('lint', values);
    expect(run.stderr + run.stdout).toMatch(/1 chart\(s\) linted, 0 chart\(s\) failed/);
    expect(run.ok).toBe(true);
  });
});

describe('helm template', () => {
  it.each([undefined, ...CI_VALUES])('renders a consistent install with %s', (values) => {
    expect(checkInstall(render(values)).problems).toEqual([]);
  });

  it('renders the defaults into a complete install', () => {
    const objects = render();
    const kinds = objects.map((o) => `${o['kind']}/${o['metadata'].name}`).sort();
    expect(kinds).toEqual(
      [
        'CSIDriver/filedriver.dev',
        'DaemonSet/fd-filedriver-node',
        'Deployment/fd-filedriver-controller',
        'ServiceAccount/fd-filedriver-controller',
        'ServiceAccount/fd-filedriver-node',
        'StorageClass/filedriver-qcow2',
        'StorageClass/filedriver-raw',
        'VolumeSnapshotClass/filedriver',
        ...['provisioner', 'attacher', 'resizer', 'snapshotter'].flatMap((s) =>
          ['ClusterRole', 'ClusterRoleBinding', 'Role', 'RoleBinding'].map((k) => `${k}/fd-filedriver-${s}`),
        ),
      ].sort(),
    );
    const install = checkInstall(objects);
    expect(install.controller).toMatchObject({ driverName: 'filedriver.dev', defaultFormat: 'qcow2', overSubscription: 1, logLevel: 'info' });
    expect(install.controller.metricsAddress).toEqual({ host: '', port: 9810 });
    // The share's parent is bound, the share looked for below it.
    expect(install.mounts).toEqual({ main: 'host:/mnt/filedriver/main' });
    expect(install.node.mounts).toEqual([{ name: 'main', path: '/filedriver/hosts/main/main' }]);
    expect(install.node.kubeletDir).toBe('/var/lib/kubelet');
  });

  it('runs the pinned sidecars with the flags a CSI controller needs', () => {
    const objects = render();
    const pod = podSpec(objects, 'Deployment');
    const images = Object.fromEntries((pod['containers'] as K8s[]).map((c) => [c['name'], c['image']]));
    expect(images).toEqual({
      filedriver: 'ghcr.io/filedriver/filedriver:0.1.0',
      'csi-provisioner': 'registry.k8s.io/sig-storage/csi-provisioner:v6.3.0',
      'csi-attacher': 'registry.k8s.io/sig-storage/csi-attacher:v4.12.0',
      'csi-resizer': 'registry.k8s.io/sig-storage/csi-resizer:v2.2.1',
      'csi-snapshotter': 'registry.k8s.io/sig-storage/csi-snapshotter:v8.6.0',
      'liveness-probe': 'registry.k8s.io/sig-storage/livenessprobe:v2.19.0',
    });
    const provisioner = container(pod, 'csi-provisioner');
    expect(provisioner['args']).toEqual(
      expect.arrayContaining(['--leader-election', '--extra-create-metadata', '--default-fstype=ext4', '--enable-capacity', '--capacity-ownerref-level=2']),
    );
    expect(provisioner['env'].map((e: K8s) => [e['name'], e['valueFrom'].fieldRef.fieldPath])).toEqual([
      ['NAMESPACE', 'metadata.namespace'],
      ['POD_NAME', 'metadata.name'],
    ]);
    for (const name of ['csi-attacher', 'csi-resizer', 'csi-snapshotter']) expect(container(pod, name)['args']).toContain('--leader-election');
    expect(container(pod, 'csi-snapshotter')['args']).toContain('--extra-create-metadata');
    const nodePod = podSpec(objects, 'DaemonSet');
    expect(container(nodePod, 'node-driver-registrar')['image']).toBe('registry.k8s.io/sig-storage/csi-node-driver-registrar:v2.17.0');
    expect(container(nodePod, 'node-driver-registrar')['livenessProbe'].exec.command).toContain('--mode=kubelet-registration-probe');
    expect(nodePod['tolerations']).toEqual([{ operator: 'Exists' }]);
    expect(nodePod['priorityClassName']).toBe('system-node-critical');
    expect(one(objects, 'DaemonSet')['spec'].updateStrategy).toEqual({ type: 'OnDelete' });
  });

  it('makes the qcow2 and raw classes an admin picks from', () => {
    const classes = all(render(), 'StorageClass').map((sc) => [sc['metadata'].name, sc['parameters'], sc['volumeBindingMode'], sc['allowVolumeExpansion']]);
    expect(classes).toEqual([
      ['filedriver-qcow2', { format: 'qcow2', 'csi.storage.k8s.io/fstype': 'ext4' }, 'WaitForFirstConsumer', true],
      ['filedriver-raw', { format: 'raw', 'csi.storage.k8s.io/fstype': 'ext4' }, 'WaitForFirstConsumer', true],
    ]);
  });

  it('lets the kubelet mount nfs exports through Retain PersistentVolumes', () => {
    const objects = render('nfs-values.yaml');
    const install = checkInstall(objects);
    expect(install.mounts).toEqual({ filer1: 'pvc:fd-filedriver-mount-filer1', filer2: 'pvc:fd-filedriver-mount-filer2', 'local-share': 'host:/mnt/shares/local-share' });
    const pv = one(objects, 'PersistentVolume', 'fd-filedriver-storage-mount-filer1')['spec'];
    expect(pv).toMatchObject({
      nfs: { server: 'filer1.example.com', path: '/export/k8s' },
      mountOptions: ['nfsvers=4.2', 'hard', 'noatime'],
      persistentVolumeReclaimPolicy: 'Retain',
      storageClassName: '',
      accessModes: ['ReadWriteMany'],
      claimRef: { namespace: 'storage', name: 'fd-filedriver-mount-filer1' },
    });
    expect(one(objects, 'PersistentVolume', 'fd-filedriver-storage-mount-filer2')['spec'].mountOptions).toBeUndefined();
    expect(one(objects, 'PersistentVolumeClaim', 'fd-filedriver-mount-filer2')['spec'].volumeName).toBe('fd-filedriver-storage-mount-filer2');
    expect(install.node.mounts.map((m) => m.path)).toEqual(['/filedriver/mounts/filer1', '/filedriver/mounts/filer2', '/filedriver/hosts/local-share/local-share']);
    expect(one(objects, 'StorageClass', 'filedriver-filers')['parameters'].mounts).toBe('filer1,filer2');
  });

  it('follows hostPath shares, a moved kubelet dir and a driver name of its own', () => {
    const objects = render('hostpath-values.yaml');
    const install = checkInstall(objects);
    expect(install.mounts).toEqual({ fast: 'host:/mnt/nfs/fast', bulk: 'host:/mnt/nfs/bulk', archive: 'host:/srv/archive' });
    expect(install.node.kubeletDir).toBe('/var/lib/k0s/kubelet');
    expect(one(objects, 'CSIDriver')['metadata'].name).toBe('files.example.com');
    const registrar = container(podSpec(objects, 'DaemonSet'), 'node-driver-registrar');
    expect(flag(registrar, 'kubelet-registration-path')).toBe('/var/lib/k0s/kubelet/plugins/files.example.com/csi.sock');
    expect(podSpec(objects, 'Deployment')['nodeSelector']).toEqual({ 'filedriver.example.com/shares': 'true' });
  });

  it('renders several classes, a default one, snapshot and attributes classes', () => {
    const objects = render('storageclasses-values.yaml');
    const fast = one(objects, 'StorageClass', 'fast-qcow2');
    expect(fast['metadata'].annotations).toEqual({ 'storageclass.kubernetes.io/is-default-class': 'true' });
    expect(fast['parameters']).toEqual({ format: 'qcow2', mounts: 'fast', 'csi.storage.k8s.io/fstype': 'ext4', clusterSize: '2M', preallocation: 'metadata' });
    const bulk = one(objects, 'StorageClass', 'bulk-raw-xfs');
    expect(bulk).toMatchObject({ reclaimPolicy: 'Retain', volumeBindingMode: 'Immediate', allowVolumeExpansion: false, mountOptions: ['noatime'] });
    expect(bulk['parameters']['csi.storage.k8s.io/fstype']).toBe('xfs');
    expect(one(objects, 'StorageClass', 'templates')['parameters']).toMatchObject({ cloneMode: 'full', sourceImage: 'bulk/golden/debian-12.qcow2' });
    expect(one(objects, 'VolumeSnapshotClass')).toMatchObject({
      metadata: { name: 'filedriver-retain', annotations: { 'snapshot.storage.kubernetes.io/is-default-class': 'true' } },
      deletionPolicy: 'Retain',
    });
    expect(all(objects, 'VolumeAttributesClass').map((v) => [v['metadata'].name, v['parameters']])).toEqual([
      ['move-to-bulk', { mount: 'bulk' }],
      ['to-raw', { format: 'raw' }],
      ['fast-qcow2', { mount: 'fast', format: 'qcow2' }],
    ]);
  });

  it('serves metrics to Prometheus through headless Services and a ServiceMonitor', () => {
    const objects = render('metrics-values.yaml');
    expect(checkInstall(objects).node.metricsAddress).toEqual({ host: '', port: 9900 });
    const services = all(objects, 'Service');
    expect(services.map((s) => [s['metadata'].name, s['spec'].clusterIP, s['spec'].selector['app.kubernetes.io/component'], s['spec'].ports])).toEqual([
      ['fd-filedriver-controller-metrics', 'None', 'controller', [{ name: 'metrics', port: 9900, targetPort: 'metrics' }]],
      ['fd-filedriver-node-metrics', 'None', 'node', [{ name: 'metrics', port: 9900, targetPort: 'metrics' }]],
    ]);
    const monitor = one(objects, 'ServiceMonitor');
    expect(monitor['metadata'].labels.release).toBe('kube-prometheus-stack');
    expect(monitor['spec'].endpoints).toEqual([{ port: 'metrics', path: '/metrics', interval: '15s' }]);
    // The monitor selects exactly the two metrics Services.
    const selected = services.filter((s) => Object.entries(monitor['spec'].selector.matchLabels).every(([k, v]) => s['metadata'].labels[k] === v));
    expect(selected).toHaveLength(2);
  });

  it('takes custom images, resources, placement and priorities, and drops what is disabled', () => {
    const objects = render('custom-values.yaml');
    const install = checkInstall(objects);
    expect(install.controller).toMatchObject({ defaultFormat: 'raw', overSubscription: 2.5, logLevel: 'debug', healthCacheSeconds: 5, metricsAddress: undefined });
    expect(install.node.maxVolumesPerNode).toBe(64);
    const ctrl = podSpec(objects, 'Deployment');
    const node = podSpec(objects, 'DaemonSet');
    expect(container(ctrl, 'filedriver')).toMatchObject({ image: 'registry.example.com/storage/filedriver:0.1.0-rc1', imagePullPolicy: 'Always' });
    expect(container(ctrl, 'filedriver')['resources']).toEqual({ requests: { cpu: '100m', memory: '128Mi' }, limits: { cpu: '1', memory: '1Gi' } });
    expect(container(node, 'filedriver')['resources']).toEqual({ requests: { cpu: '50m', memory: '256Mi' } });
    expect(ctrl['securityContext']).toMatchObject({ runAsUser: 2000, runAsGroup: 2000, runAsNonRoot: true });
    expect([ctrl['priorityClassName'], node['priorityClassName']]).toEqual(['storage-critical', 'storage-node-critical']);
    expect(ctrl['imagePullSecrets']).toEqual([{ name: 'registry-credentials' }]);
    expect(node['tolerations']).toEqual([{ key: 'dedicated', operator: 'Equal', value: 'storage', effect: 'NoSchedule' }]);
    expect(node['nodeSelector']).toEqual({ 'storage.example.com/filedriver': 'true' });
    expect(node['affinity'].nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0].matchExpressions[0].key).toBe('kubernetes.io/os');
    expect(one(objects, 'DaemonSet')['spec'].updateStrategy).toEqual({ type: 'RollingUpdate', rollingUpdate: { maxUnavailable: 1 } });
    expect(container(ctrl, 'csi-provisioner')['args']).toContain('--worker-threads=20');
    expect(flag(container(node, 'liveness-probe'), 'health-port')).toBe('29808');
    // Snapshots off: no sidecar, no RBAC, no class; metrics off: no port, no readiness.
    expect((ctrl['containers'] as K8s[]).map((c) => c['name'])).not.toContain('csi-snapshotter');
    expect(all(objects, 'VolumeSnapshotClass')).toEqual([]);
    expect(all(objects, 'ClusterRole').map((r) => r['metadata'].name)).not.toContain('fd-filedriver-snapshotter');
    expect(container(node, 'filedriver')['readinessProbe']).toBeUndefined();
  });
});

describe('invalid values', () => {
  const withMounts = (mounts: object[]) => ({ mounts });
  it.each([
    ['a bad mount name', withMounts([{ name: 'Bad_Name', hostPath: '/mnt/x' }]), /\/mounts\/0\/name.*'Bad_Name' does not match pattern/],
    ['a mount name of 41 characters', withMounts([{ name: 'a'.repeat(41), hostPath: '/mnt/x' }]), /\/mounts\/0\/name/],
    ['an unknown default format', { defaultFormat: 'vmdk' }, /\/defaultFormat.*must be one of 'qcow2', 'raw'/],
    ['an unknown class format', { storageClasses: [{ name: 'x', format: 'vhd' }] }, /\/storageClasses\/0\/format.*must be one of/],
    ['no mounts', withMounts([]), /\/mounts.*minItems: got 0, want 1/],
    ['a relative hostPath', withMounts([{ name: 'a', hostPath: 'mnt/a' }]), /\/mounts\/0\/hostPath.*does not match pattern/],
    ['a hostPath directly under / (its parent / would be bound into the pods)', withMounts([{ name: 'a', hostPath: '/nfs' }]), /\/mounts\/0\/hostPath.*does not match pattern/],
    ['a hostPath with a .. segment', withMounts([{ name: 'a', hostPath: '/mnt/../a' }]), /mounts: a hostPath \/mnt\/\.\.\/a has a \. or \.\. segment/],
    ['an nfs mount without server', withMounts([{ name: 'a', nfs: { path: '/x' } }]), /\/mounts\/0\/nfs.*missing property 'server'/],
    ['a misspelt key', { mount: [] }, /additional properties 'mount' not allowed/],
    ['an unknown class parameter', { storageClasses: [{ name: 'x', format: 'raw', parameters: { size: '1' } }] }, /invalid propertyName 'size'[\s\S]*'preallocation', 'clusterSize', 'cloneMode', 'sourceImage'/],
    ['two controller replicas', { controller: { replicas: 2 } }, /\/controller\/replicas.*maximum/],
    ['a mount with hostPath and nfs', withMounts([{ name: 'a', hostPath: '/mnt/a', nfs: { server: 's', path: '/x' } }]), /mounts: a has both hostPath and nfs/],
    ['a mount with neither', withMounts([{ name: 'a' }]), /mounts: a needs hostPath .* or nfs/],
    ['a mount twice', withMounts([{ name: 'a', hostPath: '/mnt/a' }, { name: 'a', hostPath: '/mnt/b' }]), /mounts: a is listed twice/],
    ['a class on an unknown mount', { storageClasses: [{ name: 'x', format: 'raw', mounts: ['nope'] }] }, /storageClasses: x names mount nope, which is not in mounts \(main\)/],
    ['two default classes', { storageClasses: [{ name: 'one', format: 'raw', default: true }, { name: 'two', format: 'raw', default: true }] }, /more than one has default: true/],
    ['an attributes class on an unknown mount', { volumeAttributesClasses: [{ name: 'v', mount: 'nope' }] }, /volumeAttributesClasses: v names mount nope/],
  ])('fails to render with %s', (_what, values, message) => {
    const run = helm('template', values);
    expect(run.ok).toBe(false);
    expect(run.stderr).toMatch(message);
  });
});

describe('chart documentation', () => {
  /** Every value path, objects flattened (lists and free-form maps are leaves). */
  function paths(o: K8s, prefix = ''): string[] {
    return Object.entries(o).flatMap(([k, v]) => {
      const p = `${prefix}${k}`;
      const freeForm = ['resources', 'nodeSelector', 'affinity', 'labels', 'parameters', 'updateStrategy', 'requests', 'limits', 'class', 'image'];
      if (v !== null && typeof v === 'object' && !Array.isArray(v) && Object.keys(v).length > 0 && !freeForm.includes(k)) return paths(v, `${p}.`);
      return [p];
    });
  }

  it('lists every value in the README table', () => {
    const readme = readFileSync(join(CHART, 'README.md'), 'utf8');
    const missing = paths(defaults).filter((p) => !readme.includes(`| \`${p}\``));
    expect(missing).toEqual([]);
  });

  it('renders NOTES with the mounts, classes and next steps', () => {
    const run = tool(['install', 'fd', CHART, '--dry-run=client', '--namespace', 'storage', '-f', join(CHART, 'ci', 'nfs-values.yaml')]);
    expect(run.ok).toBe(true);
    const notes = run.stdout.slice(run.stdout.indexOf('NOTES:'));
    expect(notes).toMatch(/filer1: nfs filer1\.example\.com:\/export\/k8s\s+-> topology key filedriver\.dev\/mount-filer1/);
    expect(notes).toMatch(/filedriver-filers \(format qcow2, mounts filer1,filer2\)/);
    expect(notes).toMatch(/pod-security\.kubernetes\.io\/enforce=privileged/);
  });
});
