/**
 * RBAC of the controller's sidecars, evaluated rule by rule against what each
 * sidecar's own deploy/kubernetes/rbac.yaml grants at the pinned tag.
 */
import { all, type K8s } from './render.js';

type Need = [group: string, resource: string, verbs: string[]];
const LEASES: Need = ['coordination.k8s.io', 'leases', ['get', 'watch', 'list', 'delete', 'update', 'create']];

/**
 * Each sidecar's rules from its deploy/kubernetes/rbac.yaml at the pinned tag,
 * cluster-wide and in its namespace. The chart must grant exactly these (no
 * less: the sidecar fails; no more: nobody asked for it). Deliberate
 * differences: the provisioner reads VolumeAttributesClasses (its code does,
 * its file does not say so); the resizer without pods (it watches them only
 * with --handle-volume-inuse-error, which the chart turns off); the
 * snapshotter without groupsnapshot rules (feature gate off by default).
 */
export const SIDECAR_NEEDS: Record<string, { container: string; cluster: Need[]; namespace: Need[] }> = {
  provisioner: {
    container: 'csi-provisioner',
    cluster: [
      ['', 'persistentvolumes', ['get', 'list', 'watch', 'create', 'patch', 'delete']],
      ['', 'persistentvolumeclaims', ['get', 'list', 'watch', 'update']],
      ['storage.k8s.io', 'storageclasses', ['get', 'list', 'watch']],
      ['', 'events', ['list', 'watch', 'create', 'update', 'patch']],
      ['snapshot.storage.k8s.io', 'volumesnapshots', ['get', 'list', 'watch', 'update']],
      ['snapshot.storage.k8s.io', 'volumesnapshotcontents', ['get', 'list']],
      ['storage.k8s.io', 'csinodes', ['get', 'list', 'watch']],
      ['', 'nodes', ['get', 'list', 'watch']],
      ['storage.k8s.io', 'volumeattachments', ['get', 'list', 'watch']],
      ['storage.k8s.io', 'volumeattributesclasses', ['get']],
    ],
    namespace: [
      LEASES,
      ['storage.k8s.io', 'csistoragecapacities', ['get', 'list', 'watch', 'create', 'update', 'patch', 'delete']],
      ['', 'pods', ['get']],
      ['apps', 'replicasets', ['get']],
    ],
  },
  attacher: {
    container: 'csi-attacher',
    cluster: [
      ['', 'persistentvolumes', ['get', 'list', 'watch', 'patch']],
      ['storage.k8s.io', 'csinodes', ['get', 'list', 'watch']],
      ['storage.k8s.io', 'volumeattachments', ['get', 'list', 'watch', 'patch']],
      ['storage.k8s.io', 'volumeattachments/status', ['patch']],
    ],
    namespace: [LEASES],
  },
  resizer: {
    container: 'csi-resizer',
    cluster: [
      ['', 'persistentvolumes', ['get', 'list', 'watch', 'patch']],
      ['', 'persistentvolumeclaims', ['get', 'list', 'watch']],
      ['', 'persistentvolumeclaims/status', ['patch']],
      ['', 'events', ['list', 'watch', 'create', 'update', 'patch']],
      ['storage.k8s.io', 'volumeattributesclasses', ['get', 'list', 'watch']],
    ],
    namespace: [LEASES],
  },
  snapshotter: {
    container: 'csi-snapshotter',
    cluster: [
      ['', 'events', ['list', 'watch', 'create', 'update', 'patch']],
      ['snapshot.storage.k8s.io', 'volumesnapshotclasses', ['get', 'list', 'watch']],
      ['snapshot.storage.k8s.io', 'volumesnapshotcontents', ['get', 'list', 'watch', 'update', 'patch']],
      ['snapshot.storage.k8s.io', 'volumesnapshotcontents/status', ['update', 'patch']],
    ],
    namespace: [LEASES],
  },
  'health-monitor': {
    container: 'csi-external-health-monitor-controller',
    cluster: [
      ['', 'persistentvolumes', ['get', 'list', 'watch']],
      ['', 'persistentvolumeclaims', ['get', 'list', 'watch']],
      ['', 'nodes', ['get', 'list', 'watch']],
      ['', 'pods', ['get', 'list', 'watch']],
      ['', 'events', ['get', 'list', 'watch', 'create', 'patch']],
    ],
    namespace: [LEASES],
  },
};

export function rbacProblems(objects: K8s[], sa: string, ns: string, prefix: string, sidecars: string[]): string[] {
  const problems: string[] = [];
  const bound = (kind: string, roleKind: string, name: string) =>
    all(objects, kind).some(
      (b) => b['roleRef']?.kind === roleKind && b['roleRef']?.name === name && (b['subjects'] as K8s[]).some((s) => s['kind'] === 'ServiceAccount' && s['name'] === sa && s['namespace'] === ns),
    );
  const grants = (role: K8s | undefined, [group, resource, verbs]: Need) =>
    verbs.every((verb) => (role?.['rules'] as K8s[] | undefined)?.some((r) => r['apiGroups'].includes(group) && r['resources'].includes(resource) && r['verbs'].includes(verb)) === true);
  for (const sidecar of sidecars) {
    const needs = SIDECAR_NEEDS[sidecar];
    if (needs === undefined) continue;
    const name = `${prefix}-${sidecar}`;
    const cr = all(objects, 'ClusterRole').find((r) => r['metadata'].name === name);
    const role = all(objects, 'Role').find((r) => r['metadata'].name === name && r['metadata'].namespace === ns);
    if (!bound('ClusterRoleBinding', 'ClusterRole', name)) problems.push(`ClusterRole ${name} is not bound to ${ns}/${sa}`);
    if (!bound('RoleBinding', 'Role', name)) problems.push(`Role ${name} is not bound to ${ns}/${sa}`);
    for (const need of needs.cluster) if (!grants(cr, need)) problems.push(`${sidecar} cannot ${need[2].join(',')} ${need[1]} (ClusterRole ${name})`);
    for (const need of needs.namespace) if (!grants(role, need)) problems.push(`${sidecar} cannot ${need[2].join(',')} ${need[1]} in ${ns} (Role ${name})`);
    for (const [granted, list, where] of [[cr, needs.cluster, `ClusterRole ${name}`], [role, needs.namespace, `Role ${name}`]] as const) {
      for (const rule of (granted?.['rules'] ?? []) as K8s[]) {
        for (const group of rule['apiGroups'] as string[]) {
          for (const resource of rule['resources'] as string[]) {
            for (const verb of rule['verbs'] as string[]) {
              if (!list.some(([g, r, v]) => g === group && r === resource && v.includes(verb))) problems.push(`${where} grants ${verb} ${resource}, which the ${sidecar}'s own RBAC does not`);
            }
          }
        }
      }
    }
  }
  for (const r of [...all(objects, 'ClusterRole'), ...all(objects, 'Role')]) {
    for (const rule of r['rules'] as K8s[]) {
      if ([...rule['verbs'], ...rule['resources'], ...rule['apiGroups']].includes('*')) problems.push(`${r['metadata'].name}: wildcard rule`);
      if (rule['resources'].includes('secrets')) problems.push(`${r['metadata'].name}: reads secrets, which no StorageClass here needs`);
    }
  }
  return problems;
}

