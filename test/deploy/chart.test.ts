/**
 * charts/filedriver with the real Helm binary: lint, render the defaults and
 * every documented option set (ci/*-values.yaml) into a consistent install,
 * and refuse invalid values with a message that names the problem.
 */
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { checkInstall, dataPlaneSettings } from './install.js';
import { all, apiArgs, CHART, chartFile, CI_VALUES, container, flag, helm, one, OPTIONAL_APIS, parseObjects, podSpec, render, ROOT, tool, workload, type K8s } from './render.js';

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

  it.each([undefined, ...CI_VALUES])('renders %s consistently on a cluster with every optional API too', (values) => {
    expect(checkInstall(render(values, apiArgs(OPTIONAL_APIS))).problems).toEqual([]);
  });

  it('renders the defaults into a complete install that needs no API beyond Kubernetes\' own', () => {
    const objects = render();
    const kinds = objects.map((o) => `${o['kind']}/${o['metadata'].name}`).sort();
    expect(kinds).toEqual(
      [
        'CSIDriver/filedriver.dev',
        'DaemonSet/fd-filedriver-data-plane',
        'DaemonSet/fd-filedriver-node',
        'Deployment/fd-filedriver-controller',
        'ServiceAccount/fd-filedriver-controller',
        'ServiceAccount/fd-filedriver-node',
        'StorageClass/filedriver-qcow2',
        'StorageClass/filedriver-raw',
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
    // The controller goes only where the node plugin offers the share; every pod to linux nodes.
    const ctrl = podSpec(objects, 'Deployment');
    expect(ctrl['affinity']).toEqual({
      nodeAffinity: { requiredDuringSchedulingIgnoredDuringExecution: { nodeSelectorTerms: [{ matchExpressions: [{ key: 'filedriver.dev/mount-main', operator: 'In', values: ['true'] }] }] } },
    });
    expect(ctrl['nodeSelector']).toEqual({ 'kubernetes.io/os': 'linux' });
    expect(podSpec(objects, 'DaemonSet')['nodeSelector']).toEqual({ 'kubernetes.io/os': 'linux' });
  });

  it('renders each optional object only when the cluster serves its API', () => {
    const kinds = (objects: K8s[]) => [...new Set(objects.map((o) => o['kind'] as string))].sort();
    const builtIn = ['CSIDriver', 'ClusterRole', 'ClusterRoleBinding', 'DaemonSet', 'Deployment', 'Role', 'RoleBinding', 'ServiceAccount', 'StorageClass'];
    expect(kinds(render())).toEqual(builtIn);
    const withSnapshots = render(undefined, apiArgs(['snapshot.storage.k8s.io/v1/VolumeSnapshotClass']));
    expect(one(withSnapshots, 'VolumeSnapshotClass')).toMatchObject({ metadata: { name: 'filedriver' }, driver: 'filedriver.dev', deletionPolicy: 'Delete' });
    // Nothing else appears just because the APIs are there: the rest is asked for by values.
    expect(kinds(render(undefined, apiArgs(OPTIONAL_APIS)))).toEqual([...builtIn, 'VolumeSnapshotClass'].sort());
    expect(all(render({ snapshots: { class: { create: 'never' } } }, apiArgs(OPTIONAL_APIS)), 'VolumeSnapshotClass')).toEqual([]);
    expect(all(render({ snapshots: { enabled: false } }, apiArgs(OPTIONAL_APIS)), 'VolumeSnapshotClass')).toEqual([]);
  });

  it('renders every optional object, sidecar and its RBAC with all optional APIs', () => {
    const objects = render(chartFile('examples/optional-apis-values.yaml'), apiArgs(OPTIONAL_APIS));
    expect(checkInstall(objects).problems).toEqual([]);
    expect(one(objects, 'VolumeSnapshotClass')['metadata'].name).toBe('filedriver');
    expect(one(objects, 'ServiceMonitor')['metadata'].labels.release).toBe('kube-prometheus-stack');
    expect(all(objects, 'VolumeAttributesClass').map((v) => [v['metadata'].name, v['driverName'], v['parameters']])).toEqual([
      ['move-to-bulk', 'filedriver.dev', { mount: 'bulk' }],
      ['to-raw', 'filedriver.dev', { format: 'raw' }],
      ['fast-qcow2', 'filedriver.dev', { mount: 'fast', format: 'qcow2' }],
    ]);
    const monitor = container(podSpec(objects, 'Deployment'), 'csi-external-health-monitor-controller');
    expect(monitor['image']).toBe('registry.k8s.io/sig-storage/csi-external-health-monitor-controller:v0.18.0');
    expect(monitor['args']).toEqual(expect.arrayContaining(['--csi-address=/csi/csi.sock', '--leader-election', '--http-endpoint=:9815', '--monitor-interval=1m']));
    expect(one(objects, 'ClusterRoleBinding', 'fd-filedriver-health-monitor')['roleRef'].name).toBe('fd-filedriver-health-monitor');
  });

  it.each<[string, string[], RegExp]>([
    ['no optional API', [], /metrics\.serviceMonitor\.enabled: the cluster does not serve monitoring\.coreos\.com\/v1 ServiceMonitor; install the Prometheus Operator/],
    ['no ServiceMonitor API', OPTIONAL_APIS.filter((a) => !a.includes('ServiceMonitor')), /install the Prometheus Operator \(e\.g\. kube-prometheus-stack\) first/],
    ['no VolumeAttributesClass API', OPTIONAL_APIS.filter((a) => !a.includes('VolumeAttributesClass')), /volumeAttributesClasses: the cluster does not serve storage\.k8s\.io\/v1 VolumeAttributesClass \(Kubernetes 1\.34\+\)/],
    ['no VolumeSnapshot API', OPTIONAL_APIS.filter((a) => !a.includes('VolumeSnapshotClass')), /snapshots\.class\.create=always: .* install the external-snapshotter CRDs \(client\/config\/crd\) and snapshot-controller/],
  ])('refuses the optional objects it was asked for with %s, saying what to install', (_what, apis, message) => {
    const run = helm('template', chartFile('examples/optional-apis-values.yaml'), apiArgs(apis));
    expect(run.ok).toBe(false);
    expect(run.stderr).toMatch(message);
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
    const registrar = container(nodePod, 'node-driver-registrar');
    expect(flag(registrar, 'http-endpoint')).toBe(':9809');
    expect(registrar['livenessProbe'].httpGet).toEqual({ path: '/healthz', port: 'registrar' });
    expect(JSON.stringify(registrar)).not.toMatch(/kubelet-registration-probe/);
    // Metrics and leader-election health of every controller sidecar, each on its own port.
    const endpoints = ['csi-provisioner', 'csi-attacher', 'csi-resizer', 'csi-snapshotter'].map((n) => [flag(container(pod, n), 'http-endpoint'), container(pod, n)['livenessProbe'].httpGet.path]);
    expect(endpoints).toEqual([
      [':9811', '/healthz/leader-election'],
      [':9812', '/healthz/leader-election'],
      [':9813', '/healthz/leader-election'],
      [':9814', '/healthz/leader-election'],
    ]);
    expect((pod['containers'] as K8s[]).map((c) => c['imagePullPolicy'])).toEqual(Array(6).fill('IfNotPresent'));
    expect(nodePod['tolerations']).toEqual([{ operator: 'Exists' }]);
    expect(nodePod['priorityClassName']).toBe('system-node-critical');
    expect(workload(objects, 'DaemonSet')['spec'].updateStrategy).toEqual({ type: 'OnDelete' });
  });

  it('makes the qcow2 and raw classes an admin picks from', () => {
    const classes = all(render(), 'StorageClass').map((sc) => [sc['metadata'].name, sc['parameters'], sc['volumeBindingMode'], sc['allowVolumeExpansion']]);
    expect(classes).toEqual([
      ['filedriver-qcow2', { format: 'qcow2', 'csi.storage.k8s.io/fstype': 'ext4' }, 'WaitForFirstConsumer', true],
      ['filedriver-raw', { format: 'raw', 'csi.storage.k8s.io/fstype': 'ext4' }, 'WaitForFirstConsumer', true],
    ]);
  });

  it('mounts nfs exports in a share pod per mount, never in the driver pods, through Retain PersistentVolumes', () => {
    const objects = render('nfs-values.yaml');
    const install = checkInstall(objects);
    const shares = '/var/lib/filedriver-shares/storage/fd-filedriver';
    expect(install.mounts).toEqual({ filer1: `host:${shares}/filer1`, filer2: `host:${shares}/filer2`, 'local-share': 'host:/mnt/shares/local-share' });
    const shareSets = all(objects, 'DaemonSet').filter((d) => d['metadata'].labels['app.kubernetes.io/component'] === 'nfs-share');
    expect(shareSets.map((d) => [d['metadata'].name, d['spec'].template.spec.volumes])).toEqual(
      ['filer1', 'filer2'].map((m) => [
        `fd-filedriver-nfs-${m}`,
        [
          { name: 'nfs', persistentVolumeClaim: { claimName: `fd-filedriver-mount-${m}` } },
          { name: 'shares', hostPath: { path: shares, type: 'DirectoryOrCreate' } },
        ],
      ]),
    );
    // The node plugin makes the mountpoints first, so a node offers both shares from registration on.
    expect(podSpec(objects, 'DaemonSet')['initContainers'][0].command).toEqual(['mkdir', '-p', '/filedriver/hosts/filer1/filer1', '/filedriver/hosts/filer2/filer2']);
    // The controller goes where all three shares are offered.
    const exprs = podSpec(objects, 'Deployment')['affinity'].nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0].matchExpressions;
    expect(exprs.map((e: K8s) => e['key'])).toEqual(['filedriver.dev/mount-filer1', 'filedriver.dev/mount-filer2', 'filedriver.dev/mount-local-share']);
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
    expect(install.node.mounts.map((m) => m.path)).toEqual(['/filedriver/hosts/filer1/filer1', '/filedriver/hosts/filer2/filer2', '/filedriver/hosts/local-share/local-share']);
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
    // The admin's selector and the shares' affinity together.
    const ctrl = podSpec(objects, 'Deployment');
    expect(ctrl['nodeSelector']).toEqual({ 'kubernetes.io/os': 'linux', 'filedriver.example.com/shares': 'true' });
    const exprs = ctrl['affinity'].nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0].matchExpressions;
    expect(exprs.map((e: K8s) => e['key'])).toEqual(['files.example.com/mount-fast', 'files.example.com/mount-bulk', 'files.example.com/mount-archive']);
  });

  it('adds the shares to each of the admin\'s affinity terms, or leaves placement to the admin', () => {
    const term = (key: string) => ({ matchExpressions: [{ key, operator: 'In', values: ['a'] }] });
    const affinity = { nodeAffinity: { requiredDuringSchedulingIgnoredDuringExecution: { nodeSelectorTerms: [term('zone'), term('rack')] } }, podAntiAffinity: { x: 1 } };
    const ctrl = podSpec(render({ controller: { affinity } }), 'Deployment');
    const share = { key: 'filedriver.dev/mount-main', operator: 'In', values: ['true'] };
    expect(ctrl['affinity']).toEqual({
      nodeAffinity: { requiredDuringSchedulingIgnoredDuringExecution: { nodeSelectorTerms: [{ matchExpressions: [term('zone').matchExpressions[0], share] }, { matchExpressions: [term('rack').matchExpressions[0], share] }] } },
      podAntiAffinity: { x: 1 },
    });
    const own = podSpec(render({ controller: { followShares: false, nodeSelector: { storage: 'yes' } } }), 'Deployment');
    expect([own['affinity'], own['nodeSelector']]).toEqual([undefined, { 'kubernetes.io/os': 'linux', storage: 'yes' }]);
    // The admin's value wins on the os key too (e.g. a Windows-free cluster labelled differently).
    expect(podSpec(render({ node: { nodeSelector: { 'kubernetes.io/os': 'linux', pool: 'storage' } } }), 'DaemonSet')['nodeSelector']).toEqual({ 'kubernetes.io/os': 'linux', pool: 'storage' });
  });

  it('renders several classes, a default one, and a snapshot class where the API is served', () => {
    const objects = render('storageclasses-values.yaml', apiArgs(['snapshot.storage.k8s.io/v1/VolumeSnapshotClass']));
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
    expect(all(render('storageclasses-values.yaml'), 'VolumeSnapshotClass')).toEqual([]);
  });

  it('serves metrics to Prometheus through headless Services and a ServiceMonitor', () => {
    const objects = render({ ...chartFile('ci/metrics-values.yaml'), metrics: { port: 9900, service: { enabled: true }, serviceMonitor: { enabled: true, interval: '15s', labels: { release: 'kube-prometheus-stack' } } } }, apiArgs(['monitoring.coreos.com/v1/ServiceMonitor']));
    expect(checkInstall(objects).node.metricsAddress).toEqual({ host: '', port: 9900 });
    const services = all(objects, 'Service');
    const sidecarPorts = ['provisioner', 'attacher', 'resizer', 'snapshotter'].map((name, i) => ({ name, port: 9811 + i, targetPort: name }));
    expect(services.map((s) => [s['metadata'].name, s['spec'].clusterIP, s['spec'].selector['app.kubernetes.io/component'], s['spec'].ports])).toEqual([
      ['fd-filedriver-controller-metrics', 'None', 'controller', [{ name: 'metrics', port: 9900, targetPort: 'metrics' }, ...sidecarPorts]],
      ['fd-filedriver-node-metrics', 'None', 'node', [{ name: 'metrics', port: 9900, targetPort: 'metrics' }]],
    ]);
    // Every Service port is a named port of the pods it selects.
    for (const svc of services) {
      const pod = podSpec(objects, svc['spec'].selector['app.kubernetes.io/component'] === 'controller' ? 'Deployment' : 'DaemonSet');
      const named = (pod['containers'] as K8s[]).flatMap((c) => ((c['ports'] ?? []) as K8s[]).map((p) => `${p['name']}:${p['containerPort']}`));
      for (const p of svc['spec'].ports) expect(named).toContain(`${p.targetPort}:${p.port}`);
    }
    const monitor = one(objects, 'ServiceMonitor');
    expect(monitor['metadata'].labels.release).toBe('kube-prometheus-stack');
    expect(monitor['spec'].endpoints).toEqual(['metrics', ...sidecarPorts.map((p) => p.name)].map((port) => ({ port, path: '/metrics', interval: '15s' })));
    // The monitor selects exactly the two metrics Services.
    const selected = services.filter((s) => Object.entries(monitor['spec'].selector.matchLabels).every(([k, v]) => s['metadata'].labels[k] === v));
    expect(selected).toHaveLength(2);
  });

  it('keeps metrics Service names within 63 characters for a long release name', () => {
    const run = tool(['template', 'a-release-name-that-is-long-enough-to-matter-here-x', CHART, '--namespace', 'storage', '--set', 'metrics.service.enabled=true']);
    expect(run.ok).toBe(true);
    const names = all(parseObjects(run.stdout), 'Service').map((s) => s['metadata'].name as string);
    expect(names).toEqual(['a-release-name-that-is-long-enough-to-matter-controller-metrics', 'a-release-name-that-is-long-enough-to-matter-node-metrics']);
    for (const n of names) expect(n.length).toBeLessThanOrEqual(63);
  });

  it('pins images by digest, with per-image pull policies, names, pod labels and annotations of one\'s own', () => {
    const digest = `sha256:${'a'.repeat(64)}`;
    const objects = render({
      fullnameOverride: 'files',
      image: { repository: 'r.example/filedriver', tag: '0.1.0', digest, pullPolicy: 'Always' },
      sidecars: { provisioner: { image: { repository: 'r.example/csi-provisioner', tag: 'v6.3.0', digest, pullPolicy: 'Never' } } },
      controller: { podAnnotations: { 'example.com/owner': 'storage' }, podLabels: { team: 'storage' } },
      node: { podAnnotations: { 'example.com/owner': 'nodes' }, podLabels: { team: 'nodes' } },
    });
    expect(checkInstall(objects).problems).toEqual([]);
    const ctrl = podSpec(objects, 'Deployment');
    expect(container(ctrl, 'filedriver')).toMatchObject({ image: `r.example/filedriver:0.1.0@${digest}`, imagePullPolicy: 'Always' });
    expect(container(ctrl, 'csi-provisioner')).toMatchObject({ image: `r.example/csi-provisioner:v6.3.0@${digest}`, imagePullPolicy: 'Never' });
    expect(container(ctrl, 'csi-attacher')['imagePullPolicy']).toBe('IfNotPresent');
    const meta = workload(objects, 'Deployment')['spec'].template.metadata;
    expect(meta).toMatchObject({ annotations: { 'example.com/owner': 'storage' }, labels: { team: 'storage', 'app.kubernetes.io/component': 'controller' } });
    expect(workload(objects, 'DaemonSet')['spec'].template.metadata).toMatchObject({ annotations: { 'example.com/owner': 'nodes' }, labels: { team: 'nodes' } });
    expect(workload(objects, 'Deployment')['metadata'].name).toBe('files-controller');
    expect(podSpec(render({ nameOverride: 'fdrv' }), 'Deployment')['serviceAccountName']).toBe('fd-fdrv-controller');
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
    const plane = container(one(objects, 'DaemonSet', 'fd-filedriver-data-plane')['spec'].template.spec, 'data-plane');
    expect([plane['resources'], flag(plane, 'threads')]).toEqual([{ requests: { cpu: '50m', memory: '128Mi' } }, '2']);
    expect(ctrl['securityContext']).toMatchObject({ runAsUser: 2000, runAsGroup: 2000, runAsNonRoot: true });
    expect([ctrl['priorityClassName'], node['priorityClassName']]).toEqual(['storage-critical', 'storage-node-critical']);
    expect(ctrl['imagePullSecrets']).toEqual([{ name: 'registry-credentials' }]);
    expect(node['tolerations']).toEqual([{ key: 'dedicated', operator: 'Equal', value: 'storage', effect: 'NoSchedule' }]);
    expect(node['nodeSelector']).toEqual({ 'kubernetes.io/os': 'linux', 'storage.example.com/filedriver': 'true' });
    expect(node['affinity'].nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0].matchExpressions[0].key).toBe('kubernetes.io/os');
    expect(workload(objects, 'DaemonSet')['spec'].updateStrategy).toEqual({ type: 'RollingUpdate', rollingUpdate: { maxUnavailable: 1 } });
    expect(container(ctrl, 'csi-provisioner')['args']).toContain('--worker-threads=20');
    expect(flag(container(node, 'liveness-probe'), 'health-port')).toBe('29808');
    // Snapshots off: no sidecar, no RBAC, no class; metrics off: no port, no readiness.
    expect((ctrl['containers'] as K8s[]).map((c) => c['name'])).not.toContain('csi-snapshotter');
    expect(all(objects, 'VolumeSnapshotClass')).toEqual([]);
    expect(all(objects, 'ClusterRole').map((r) => r['metadata'].name)).not.toContain('fd-filedriver-snapshotter');
    expect(container(node, 'filedriver')['readinessProbe']).toBeUndefined();
  });
});

describe('data plane', () => {
  const planeSet = (objects: K8s[]) => one(objects, 'DaemonSet', 'fd-filedriver-data-plane');
  const planePod = (objects: K8s[]) => planeSet(objects)['spec'].template.spec as K8s;
  const mountAt = (c: K8s, path: string) => (c['volumeMounts'] as K8s[]).find((m) => m['mountPath'] === path);
  const volume = (pod: K8s, name: string) => (pod['volumes'] as K8s[]).find((v) => v['name'] === name);

  it('runs the node\'s qemu-storage-daemon in a DaemonSet of its own that upgrades and probes never restart', () => {
    const objects = render();
    const install = checkInstall(objects);
    expect(install.problems).toEqual([]);
    expect(planeSet(objects)['spec'].updateStrategy).toEqual({ type: 'OnDelete' });
    const pod = planePod(objects);
    expect((pod['containers'] as K8s[]).map((c) => c['name'])).toEqual(['data-plane']);
    const c = container(pod, 'data-plane');
    expect(c['image']).toBe('ghcr.io/filedriver/filedriver:0.1.0');
    expect(c['args']).toEqual(['data-plane', '--kubelet-dir=/var/lib/kubelet', '--driver-name=filedriver.dev']);
    expect(c['securityContext']).toEqual({ privileged: true, runAsUser: 0 });
    // Its FUSE exports reach the host, and the node plugin sees them through its kubelet dir.
    expect(mountAt(c, '/var/lib/kubelet/plugins/filedriver.dev')).toEqual({ name: 'plugin-dir', mountPath: '/var/lib/kubelet/plugins/filedriver.dev', mountPropagation: 'Bidirectional' });
    expect(volume(pod, 'plugin-dir')?.['hostPath']).toEqual({ path: '/var/lib/kubelet/plugins/filedriver.dev', type: 'DirectoryOrCreate' });
    expect(volume(pod, mountAt(c, '/dev')?.['name'])?.['hostPath'].path).toBe('/dev');
    const node = container(podSpec(objects, 'DaemonSet'), 'filedriver');
    expect(mountAt(node, '/var/lib/kubelet')?.['mountPropagation']).toBe('Bidirectional');
    expect(mountAt(node, '/csi')?.['mountPropagation']).toBe('HostToContainer');
    // The images at the node plugin's paths.
    expect(mountAt(c, '/filedriver/hosts/main')).toEqual({ name: 'mount-main', mountPath: '/filedriver/hosts/main', mountPropagation: 'HostToContainer' });
    expect(c['livenessProbe']).toBeUndefined();
    expect(c['readinessProbe'].exec.command).toEqual(['test', '-S', '/var/lib/kubelet/plugins/filedriver.dev/dp/qmp.sock']);
    expect(pod['priorityClassName']).toBe('system-node-critical');
    expect(pod['terminationGracePeriodSeconds']).toBeGreaterThanOrEqual(60);
    expect(c['resources']).toEqual(defaults['dataPlane'].resources);
    // Through the command's own parser: where the node plugin (external) looks for it.
    expect(install.node.dataPlane).toBe('external');
    expect(flag(node, 'data-plane')).toBe('external');
    expect(install.dataPlane).toMatchObject({ dir: '/var/lib/kubelet/plugins/filedriver.dev/dp', config: { kubeletDir: '/var/lib/kubelet', driverName: 'filedriver.dev' } });
  });

  it('runs wherever the node plugin does, with its priority, image, pod labels and annotations', () => {
    const objects = render({ ...chartFile('ci/custom-values.yaml'), node: { ...(chartFile('ci/custom-values.yaml') as K8s)['node'], podLabels: { team: 'nodes' }, podAnnotations: { 'example.com/owner': 'nodes' } } });
    expect(checkInstall(objects).problems).toEqual([]);
    const pod = planePod(objects);
    const node = podSpec(objects, 'DaemonSet');
    for (const key of ['nodeSelector', 'tolerations', 'affinity', 'priorityClassName', 'imagePullSecrets']) expect([key, pod[key]]).toEqual([key, node[key]]);
    expect(pod['tolerations']).toEqual([{ key: 'dedicated', operator: 'Equal', value: 'storage', effect: 'NoSchedule' }]);
    expect(container(pod, 'data-plane')).toMatchObject({ image: 'registry.example.com/storage/filedriver:0.1.0-rc1', imagePullPolicy: 'Always' });
    expect(planeSet(objects)['spec'].template.metadata).toMatchObject({ annotations: { 'example.com/owner': 'nodes' }, labels: { team: 'nodes', 'app.kubernetes.io/component': 'data-plane' } });
    // The node plugin's own update strategy (here RollingUpdate) is not the data plane's.
    expect(planeSet(objects)['spec'].updateStrategy).toEqual({ type: 'OnDelete' });
    // Its selector is its own: the node plugin's DaemonSet does not claim its pods, nor it theirs.
    expect(planeSet(objects)['spec'].selector.matchLabels['app.kubernetes.io/component']).toBe('data-plane');
  });

  it('sees nfs shares where the node plugin does, and follows a moved kubelet dir and driver name', () => {
    const objects = render({ ...chartFile('ci/nfs-values.yaml'), kubeletDir: '/var/lib/k0s/kubelet', driverName: 'files.example.com' });
    const install = checkInstall(objects);
    expect(install.problems).toEqual([]);
    expect(install.dataPlane?.dir).toBe('/var/lib/k0s/kubelet/plugins/files.example.com/dp');
    const c = container(planePod(objects), 'data-plane');
    expect(mountAt(c, '/var/lib/k0s/kubelet/plugins/files.example.com')?.['mountPropagation']).toBe('Bidirectional');
    expect((c['volumeMounts'] as K8s[]).filter((m) => m['name'].startsWith('mount-')).map((m) => m['mountPath'])).toEqual(
      (container(podSpec(objects, 'DaemonSet'), 'filedriver')['volumeMounts'] as K8s[]).filter((m) => m['name'].startsWith('mount-')).map((m) => m['mountPath']),
    );
  });

  it('takes its iothreads and resources from values', () => {
    const resources = { requests: { cpu: '100m', memory: '256Mi' }, limits: { memory: '2Gi' } };
    const objects = render({ dataPlane: { threads: 2, resources } });
    expect(checkInstall(objects).problems).toEqual([]);
    const c = container(planePod(objects), 'data-plane');
    expect(flag(c, 'threads')).toBe('2');
    expect(dataPlaneSettings(c).threads).toBe(2);
    expect(c['resources']).toEqual(resources);
  });

  it.each<[string, object | undefined]>([
    ['the defaults', undefined],
    ['a moved kubelet dir, a driver name and threads', { kubeletDir: '/var/lib/k0s/kubelet', driverName: 'files.example.com', dataPlane: { threads: 3 } }],
  ])('renders args that the built filedriver data-plane accepts, with %s', (_what, values) => {
    const args = container(planePod(render(values)), 'data-plane')['args'] as string[];
    // --help answers only after the flags parsed (strict: an unknown one fails).
    const out = execFileSync(process.execPath, [join(ROOT, 'dist/src/main.js'), ...args, '--help'], { encoding: 'utf8' });
    expect(out).toMatch(/^Usage: filedriver data-plane /);
    expect(() => execFileSync(process.execPath, [join(ROOT, 'dist/src/main.js'), ...args, '--no-such-flag', '--help'], { stdio: 'pipe' })).toThrow(/Unknown option '--no-such-flag'/);
  });

  it('leaves the daemon to the node plugin when disabled (managed)', () => {
    const objects = render('managed-data-plane-values.yaml');
    const install = checkInstall(objects);
    expect(install.problems).toEqual([]);
    expect(all(objects, 'DaemonSet').map((d) => d['metadata'].name)).toEqual(['fd-filedriver-node']);
    expect(install.dataPlane).toBeUndefined();
    const node = container(podSpec(objects, 'DaemonSet'), 'filedriver');
    expect(install.node.dataPlane).toBe('managed');
    expect(flag(node, 'data-plane')).toBe('managed');
    expect(node['args']).not.toContain('--data-plane=external');
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
    ['a ServiceMonitor without metrics', { metrics: { enabled: false, serviceMonitor: { enabled: true } } }, /metrics: service\.enabled or serviceMonitor\.enabled needs metrics\.enabled=true/],
    ['metrics Services without metrics', { metrics: { enabled: false, service: { enabled: true } } }, /needs metrics\.enabled=true/],
    [
      'hostPath shares and nothing placing the controller',
      { controller: { followShares: false } },
      /controller: hostPath mounts \(main\) exist on some nodes only, and nothing places the controller there/,
    ],
    ['a sidecar digest that is not sha256', { sidecars: { attacher: { image: { repository: 'x', tag: 'v1.0.0', digest: 'md5:abc' } } } }, /\/sidecars\/attacher\/image\/digest.*does not match pattern/],
    ['an unknown pull policy', { sidecars: { resizer: { image: { repository: 'x', tag: 'v1.0.0', pullPolicy: 'Sometimes' } } } }, /\/sidecars\/resizer\/image\/pullPolicy/],
    ['an unknown snapshot class mode', { snapshots: { class: { create: 'maybe' } } }, /\/snapshots\/class\/create/],
    ['two sidecars on one port', { sidecars: { resizer: { httpPort: 9811 } } }, /ports: sidecars\.provisioner\.httpPort and sidecars\.resizer\.httpPort are both 9811 in the controller pod/],
    ['data plane threads beyond 64', { dataPlane: { threads: 65 } }, /\/dataPlane\/threads.*maximum/],
    ['data plane threads as a string', { dataPlane: { threads: '2' } }, /\/dataPlane\/threads.*got string, want integer/],
    ['a misspelt data plane key', { dataPlane: { enable: false } }, /additional properties 'enable' not allowed/],
    [
      'a QMP socket path too long for a unix socket',
      { kubeletDir: `/var/lib/${'k'.repeat(40)}/kubelet`, driverName: `${'d'.repeat(40)}.example.com` },
      /kubeletDir, driverName: the data plane's QMP socket \/var\/lib\/k+\/kubelet\/plugins\/d+\.example\.com\/dp\/qmp\.sock has 1\d\d bytes, more than a unix socket path takes \(107\)/,
    ],
    ['metrics on the registrar\'s port', { metrics: { port: 9809 } }, /ports: sidecars\.nodeDriverRegistrar\.httpPort and metrics\.port are both 9809 in the node pod/],
  ])('fails to render with %s', (_what, values, message) => {
    const run = helm('template', values, apiArgs(OPTIONAL_APIS));
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
    expect(notes).toMatch(/No VolumeSnapshotClass was made: the cluster does not serve the VolumeSnapshot API/);
    expect(notes).toMatch(/The controller runs only on a node whose node plugin offers every mount/);
  });
});
