/**
 * A stand-in for a bare cluster's API server, enough for `kubectl apply
 * --dry-run=client`: legacy discovery of Kubernetes' own kinds (and of extra
 * groups, as if their CRDs were installed), and 404 for every object, so kubectl
 * maps each manifest to a resource and reports what it would create. An object
 * whose kind the cluster does not serve fails as on a real one ("no matches for
 * kind"). No validation schema is served: kubectl runs with --validate=false.
 */
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ROOT } from './render.js';

type Resource = [name: string, kind: string, namespaced: boolean];

/** Kubernetes 1.30's kinds that filedriver's manifests use (and a few neighbours). */
const BUILT_IN: Record<string, Resource[]> = {
  v1: [
    ['namespaces', 'Namespace', false],
    ['serviceaccounts', 'ServiceAccount', true],
    ['services', 'Service', true],
    ['pods', 'Pod', true],
    ['persistentvolumes', 'PersistentVolume', false],
    ['persistentvolumeclaims', 'PersistentVolumeClaim', true],
    ['configmaps', 'ConfigMap', true],
  ],
  'apps/v1': [
    ['deployments', 'Deployment', true],
    ['daemonsets', 'DaemonSet', true],
  ],
  'rbac.authorization.k8s.io/v1': [
    ['clusterroles', 'ClusterRole', false],
    ['clusterrolebindings', 'ClusterRoleBinding', false],
    ['roles', 'Role', true],
    ['rolebindings', 'RoleBinding', true],
  ],
  'storage.k8s.io/v1': [
    ['csidrivers', 'CSIDriver', false],
    ['csinodes', 'CSINode', false],
    ['storageclasses', 'StorageClass', false],
    ['volumeattachments', 'VolumeAttachment', false],
    ['csistoragecapacities', 'CSIStorageCapacity', true],
  ],
};

/** What the external-snapshotter CRDs add. */
export const SNAPSHOT_CRDS: Record<string, Resource[]> = {
  'snapshot.storage.k8s.io/v1': [
    ['volumesnapshotclasses', 'VolumeSnapshotClass', false],
    ['volumesnapshots', 'VolumeSnapshot', true],
    ['volumesnapshotcontents', 'VolumeSnapshotContent', false],
  ],
};

export interface FakeCluster {
  kubeconfig: string;
  /** `kubectl ARGS` against this cluster, asynchronously (the server runs in this process). */
  kubectl(args: string[]): Promise<{ ok: boolean; stdout: string; stderr: string }>;
  close(): Promise<void>;
}

export async function fakeCluster(extra: Record<string, Resource[]> = {}): Promise<FakeCluster> {
  const served = { ...BUILT_IN, ...extra };
  const json = (res: import('node:http').ServerResponse, code: number, body: unknown) => {
    res.writeHead(code, { 'content-type': 'application/json' });
    res.end(JSON.stringify(body));
  };
  const server: Server = createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0] ?? '/';
    if (path === '/version') return json(res, 200, { major: '1', minor: '30', gitVersion: 'v1.30.0', platform: 'linux/amd64' });
    if (path === '/api') return json(res, 200, { kind: 'APIVersions', versions: ['v1'], serverAddressByClientCIDRs: [] });
    if (path === '/apis') {
      const groups = Object.keys(served)
        .filter((gv) => gv.includes('/'))
        .map((gv) => {
          const [group = '', version = ''] = gv.split('/');
          const v = { groupVersion: gv, version };
          return { name: group, versions: [v], preferredVersion: v };
        });
      return json(res, 200, { kind: 'APIGroupList', apiVersion: 'v1', groups });
    }
    const gv = path === '/api/v1' ? 'v1' : /^\/apis\/([^/]+\/[^/]+)$/.exec(path)?.[1];
    const resources = gv === undefined ? undefined : served[gv];
    if (gv !== undefined && resources !== undefined) {
      const verbs = ['create', 'delete', 'get', 'list', 'patch', 'update', 'watch'];
      return json(res, 200, {
        kind: 'APIResourceList',
        apiVersion: 'v1',
        groupVersion: gv,
        resources: resources.map(([name, kind, namespaced]) => ({ name, singularName: kind.toLowerCase(), namespaced, kind, verbs })),
      });
    }
    // Every object is new to this cluster.
    return json(res, 404, { kind: 'Status', apiVersion: 'v1', status: 'Failure', message: `${path} not found`, reason: 'NotFound', code: 404 });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address() as AddressInfo;
  const dir = mkdtempSync(join(tmpdir(), 'fdtest-kubeconfig-'));
  const kubeconfig = join(dir, 'config');
  writeFileSync(
    kubeconfig,
    [
      'apiVersion: v1',
      'kind: Config',
      'clusters: [{name: fake, cluster: {server: "http://127.0.0.1:' + String(port) + '"}}]',
      'users: [{name: fake, user: {}}]',
      'contexts: [{name: fake, context: {cluster: fake, user: fake}}]',
      'current-context: fake',
      '',
    ].join('\n'),
  );
  return {
    kubeconfig,
    kubectl: (args) =>
      new Promise((resolve) => {
        execFile('bash', [join(ROOT, 'scripts/helm.sh'), 'kubectl', '--kubeconfig', kubeconfig, '--cache-dir', join(dir, 'cache'), ...args], (err, stdout, stderr) =>
          resolve({ ok: err === null, stdout, stderr }),
        );
      }),
    close: async () => {
      await new Promise<void>((r) => server.close(() => r()));
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
