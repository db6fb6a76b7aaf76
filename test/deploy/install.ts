/**
 * What makes a rendered install consistent, as one list of problems (empty =
 * fine), so the chart's every option set and deploy/ get the same scrutiny:
 * the driver's args go through serve's real parser, sockets and mounts are
 * followed from flag to volume to host path, and RBAC is evaluated rule by rule.
 */
import { dirname, posix } from 'node:path';
import { parseServe } from '../../src/cli/serve.js';
import type { Config } from '../../src/config.js';
import { all, container, flag, one, podSpec, type K8s } from './render.js';

type Need = [group: string, resource: string, verbs: string[]];
const LEASES: Need = ['coordination.k8s.io', 'leases', ['get', 'create', 'update']];

/** What each sidecar does with the API (its docs' RBAC), cluster-wide and in its namespace. */
export const SIDECAR_NEEDS: Record<string, { container: string; cluster: Need[]; namespace: Need[] }> = {
  provisioner: {
    container: 'csi-provisioner',
    cluster: [
      ['', 'persistentvolumes', ['get', 'list', 'watch', 'create', 'delete']],
      ['', 'persistentvolumeclaims', ['get', 'list', 'watch', 'update']],
      ['storage.k8s.io', 'storageclasses', ['get', 'list', 'watch']],
      ['', 'events', ['create', 'patch']],
      ['storage.k8s.io', 'csinodes', ['get', 'list', 'watch']],
      ['', 'nodes', ['get', 'list', 'watch']],
      ['storage.k8s.io', 'volumeattachments', ['get', 'list', 'watch']],
      ['snapshot.storage.k8s.io', 'volumesnapshots', ['get', 'list']],
      ['snapshot.storage.k8s.io', 'volumesnapshotcontents', ['get', 'list']],
      ['storage.k8s.io', 'volumeattributesclasses', ['get']],
    ],
    namespace: [
      LEASES,
      ['storage.k8s.io', 'csistoragecapacities', ['get', 'list', 'watch', 'create', 'update', 'delete']],
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
      ['', 'events', ['create', 'patch']],
      ['storage.k8s.io', 'volumeattributesclasses', ['get', 'list', 'watch']],
    ],
    namespace: [LEASES],
  },
  snapshotter: {
    container: 'csi-snapshotter',
    cluster: [
      ['snapshot.storage.k8s.io', 'volumesnapshotclasses', ['get', 'list', 'watch']],
      ['snapshot.storage.k8s.io', 'volumesnapshotcontents', ['get', 'list', 'watch', 'update', 'patch']],
      ['snapshot.storage.k8s.io', 'volumesnapshotcontents/status', ['update', 'patch']],
      ['', 'events', ['create', 'patch']],
    ],
    namespace: [LEASES],
  },
};

/** Kubernetes' $(VAR) expansion of args from the container's env (fieldRefs get stand-ins). */
function containerEnv(c: K8s): Record<string, string> {
  const env: Record<string, string> = {};
  for (const e of (c['env'] ?? []) as K8s[]) {
    const field = e['valueFrom']?.fieldRef?.fieldPath as string | undefined;
    env[e['name']] = e['value'] ?? (field === undefined ? '' : `<${field}>`);
  }
  return env;
}

/** The driver container's args through `filedriver serve`'s own parser. */
export function driverConfig(c: K8s): Config {
  const env = containerEnv(c);
  const args = ((c['args'] ?? []) as string[]).map((a) => a.replace(/\$\(([A-Z_]+)\)/g, (_, v: string) => env[v] ?? `$(${v})`));
  if (args[0] !== 'serve') throw new Error(`driver container args start with ${String(args[0])}, not serve`);
  const config = parseServe(args.slice(1), env);
  if (config === 'help') throw new Error('driver container asks for --help');
  return config;
}

const volumeOf = (pod: K8s, name: string): K8s | undefined => (pod['volumes'] as K8s[]).find((v) => v['name'] === name);
const mountsOf = (c: K8s): K8s[] => (c['volumeMounts'] ?? []) as K8s[];
const inside = (path: string, dir: string) => path === dir || path.startsWith(dir.endsWith('/') ? dir : `${dir}/`);

/**
 * Where each driver mount really comes from: `host:<path>` or `pvc:<claim>`.
 * A hostPath share must sit strictly below the bound directory, so that only
 * the host's own mount of it makes it a mount point inside the container.
 */
export function mountSources(pod: K8s, c: K8s, config: Config, problems: string[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (const m of config.mounts) {
    const vm = mountsOf(c)
      .filter((x) => inside(m.path, x['mountPath']))
      .sort((a, b) => b['mountPath'].length - a['mountPath'].length)[0];
    const vol = vm === undefined ? undefined : volumeOf(pod, vm['name']);
    if (vm === undefined || vol === undefined) {
      problems.push(`${c['name']}: mount ${m.name} at ${m.path} is on no volume`);
      continue;
    }
    if (vol['hostPath'] !== undefined) {
      if (vm['mountPath'] === m.path) problems.push(`${c['name']}: mount ${m.name} binds the share itself, so it always looks mounted`);
      if (vm['mountPropagation'] !== 'HostToContainer') problems.push(`${c['name']}: mount ${m.name} lacks HostToContainer propagation`);
      out[m.name] = `host:${posix.join(vol['hostPath'].path, posix.relative(vm['mountPath'], m.path))}`;
    } else if (vol['persistentVolumeClaim'] !== undefined) {
      out[m.name] = `pvc:${vol['persistentVolumeClaim'].claimName}`;
    } else problems.push(`${c['name']}: mount ${m.name} is on volume ${vm['name']}, neither hostPath nor a claim`);
  }
  return out;
}

/** Checks one container's socket: the flag's path is on the volume the driver's socket is on. */
function socketOn(pod: K8s, c: K8s, socket: string, volume: string, problems: string[]): void {
  const vm = mountsOf(c).find((x) => x['name'] === volume);
  if (vm === undefined || posix.join(vm['mountPath'], 'csi.sock') !== socket) problems.push(`${c['name']}: socket ${socket} is not on volume ${volume}`);
  if (volumeOf(pod, volume) === undefined) problems.push(`no volume ${volume}`);
}

function rbacProblems(objects: K8s[], sa: string, ns: string, prefix: string, sidecars: string[]): string[] {
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
  }
  for (const r of [...all(objects, 'ClusterRole'), ...all(objects, 'Role')]) {
    for (const rule of r['rules'] as K8s[]) {
      if ([...rule['verbs'], ...rule['resources'], ...rule['apiGroups']].includes('*')) problems.push(`${r['metadata'].name}: wildcard rule`);
      if (rule['resources'].includes('secrets')) problems.push(`${r['metadata'].name}: reads secrets, which no StorageClass here needs`);
    }
  }
  return problems;
}

export interface Install {
  problems: string[];
  controller: Config;
  node: Config;
  /** mount name → its source, as both pods see it. */
  mounts: Record<string, string>;
}

export function checkInstall(objects: K8s[]): Install {
  const problems: string[] = [];
  const ctrlPod = podSpec(objects, 'Deployment');
  const nodePod = podSpec(objects, 'DaemonSet');
  const ctrl = container(ctrlPod, 'filedriver');
  const node = container(nodePod, 'filedriver');
  const controller = driverConfig(ctrl);
  const nodeConfig = driverConfig(node);
  if (controller.mode !== 'controller') problems.push(`controller runs --mode ${controller.mode}`);
  if (nodeConfig.mode !== 'node') problems.push(`node plugin runs --mode ${nodeConfig.mode}`);
  if (nodeConfig.nodeId !== '<spec.nodeName>') problems.push(`node id is ${nodeConfig.nodeId}, not the pod's node name`);

  // One driver name everywhere.
  const driver = one(objects, 'CSIDriver');
  const name = driver['metadata'].name;
  for (const [what, value] of [
    ['controller --driver-name', controller.driverName],
    ['node --driver-name', nodeConfig.driverName],
    ...all(objects, 'StorageClass').map((sc) => [`StorageClass ${sc['metadata'].name}`, sc['provisioner']]),
    ...all(objects, 'VolumeSnapshotClass').map((c) => [`VolumeSnapshotClass ${c['metadata'].name}`, c['driver']]),
    ...all(objects, 'VolumeAttributesClass').map((c) => [`VolumeAttributesClass ${c['metadata'].name}`, c['driverName']]),
  ]) {
    if (value !== name) problems.push(`${what} names driver ${String(value)}, the CSIDriver is ${name}`);
  }
  const spec = driver['spec'];
  if (spec.attachRequired !== true || spec.podInfoOnMount !== true || spec.storageCapacity !== true || spec.fsGroupPolicy !== 'File' || spec.volumeLifecycleModes?.join() !== 'Persistent') {
    problems.push(`CSIDriver spec is ${JSON.stringify(spec)}`);
  }

  // Sockets: every sidecar reaches the driver's socket through the same volume.
  const socketVolume = (c: K8s, socket: string) => mountsOf(c).find((x) => posix.join(x['mountPath'], 'csi.sock') === socket)?.['name'] as string | undefined;
  for (const [pod, c, config] of [[ctrlPod, ctrl, controller], [nodePod, node, nodeConfig]] as const) {
    const vol = socketVolume(c, config.socketPath);
    if (vol === undefined) {
      problems.push(`${c['name']}: socket ${config.socketPath} is on no volume`);
      continue;
    }
    for (const side of (pod['containers'] as K8s[]).filter((x) => x !== c)) {
      const address = flag(side, 'csi-address');
      if (address !== config.socketPath) problems.push(`${side['name']}: --csi-address ${String(address)}, driver serves ${config.socketPath}`);
      else socketOn(pod, side, address, vol, problems);
    }
  }

  // The node plugin: the kubelet finds its socket, and its mounts reach the kubelet.
  const kubelet = nodeConfig.kubeletDir;
  const pluginSocket = `${kubelet}/plugins/${name}/csi.sock`;
  const registrar = container(nodePod, 'node-driver-registrar');
  if (flag(registrar, 'kubelet-registration-path') !== pluginSocket) problems.push(`registrar registers ${String(flag(registrar, 'kubelet-registration-path'))}, not ${pluginSocket}`);
  const socketHost = volumeOf(nodePod, socketVolume(node, nodeConfig.socketPath) ?? '')?.['hostPath']?.path;
  if (socketHost !== dirname(pluginSocket)) problems.push(`node socket directory is ${String(socketHost)} on the host, not ${dirname(pluginSocket)}`);
  const regMount = mountsOf(registrar).find((m) => m['mountPath'] === '/registration');
  if (volumeOf(nodePod, regMount?.['name'] ?? '')?.['hostPath']?.path !== `${kubelet}/plugins_registry`) problems.push('registrar does not see the kubelet plugins_registry');
  const kubeletMount = mountsOf(node).find((m) => m['mountPath'] === kubelet);
  if (kubeletMount?.['mountPropagation'] !== 'Bidirectional' || volumeOf(nodePod, kubeletMount['name'])?.['hostPath']?.path !== kubelet) {
    problems.push(`node plugin lacks ${kubelet} with Bidirectional propagation`);
  }
  if (volumeOf(nodePod, mountsOf(node).find((m) => m['mountPath'] === '/dev')?.['name'] ?? '')?.['hostPath']?.path !== '/dev') problems.push('node plugin lacks /dev');
  const nodeSec = node['securityContext'] ?? {};
  if (nodeSec.privileged !== true || nodeSec.runAsUser !== 0) problems.push('node plugin is not privileged root');
  for (const cap of ['SYS_ADMIN', 'SYS_RESOURCE']) if (!(nodeSec.capabilities?.add ?? []).includes(cap)) problems.push(`node plugin lacks ${cap}`);

  // The controller: non-root, unprivileged, one at a time.
  const podSec = ctrlPod['securityContext'] ?? {};
  if (podSec.runAsNonRoot !== true || !(podSec.runAsUser > 0)) problems.push('controller pod may run as root');
  for (const c of ctrlPod['containers'] as K8s[]) {
    if (c['securityContext']?.privileged === true || c['securityContext']?.allowPrivilegeEscalation !== false) problems.push(`${c['name']}: may escalate privileges`);
  }
  const deployment = one(objects, 'Deployment')['spec'];
  if (deployment.strategy?.type !== 'Recreate' || deployment.replicas > 1) problems.push('controller may run twice at once');

  // Mounts: the same shares in both pods.
  const fromCtrl = mountSources(ctrlPod, ctrl, controller, problems);
  const fromNode = mountSources(nodePod, node, nodeConfig, problems);
  if (JSON.stringify(fromCtrl) !== JSON.stringify(fromNode)) problems.push(`pods see different mounts: ${JSON.stringify(fromCtrl)} vs ${JSON.stringify(fromNode)}`);
  for (const sc of all(objects, 'StorageClass')) {
    for (const m of (sc['parameters']?.mounts ?? '').split(',').filter((s: string) => s !== '')) {
      if (fromNode[m] === undefined) problems.push(`StorageClass ${sc['metadata'].name} names unknown mount ${m}`);
    }
  }

  // Health: the driver's liveness goes through the livenessprobe sidecar to Probe.
  for (const [pod, c, config] of [[ctrlPod, ctrl, controller], [nodePod, node, nodeConfig]] as const) {
    const probePort = c['livenessProbe']?.httpGet?.port;
    const port = (c['ports'] as K8s[] | undefined)?.find((p) => p['name'] === probePort)?.['containerPort'];
    const sidecarPort = flag(container(pod, 'liveness-probe'), 'health-port');
    if (port === undefined || String(port) !== sidecarPort) problems.push(`${c['name']}: livenessProbe port ${String(port)} is not the livenessprobe's --health-port ${String(sidecarPort)}`);
    if (config.metricsAddress !== undefined) {
      const metricsPort = (c['ports'] as K8s[]).find((p) => p['name'] === 'metrics')?.['containerPort'];
      if (metricsPort !== config.metricsAddress.port) problems.push(`${c['name']}: metrics port ${String(metricsPort)} is not --metrics-address's`);
      if (c['readinessProbe']?.httpGet?.path !== '/healthz' || c['readinessProbe']?.httpGet?.port !== 'metrics') problems.push(`${c['name']}: readiness is not /healthz`);
    }
  }

  // Images: pinned.
  for (const c of [...(ctrlPod['containers'] as K8s[]), ...(nodePod['containers'] as K8s[])]) {
    const tag = /:([^:/@]+)$/.exec(c['image'] as string)?.[1];
    if (tag === undefined || tag === 'latest') problems.push(`${c['name']}: image ${c['image']} is not pinned`);
    else if (c['image'].includes('sig-storage/') && !/^v\d+\.\d+\.\d+$/.test(tag)) problems.push(`${c['name']}: sidecar tag ${tag} is not a release`);
  }

  // RBAC: each controller sidecar's own roles cover what it does.
  const sa = ctrlPod['serviceAccountName'] as string;
  const ns = one(objects, 'Deployment')['metadata'].namespace as string;
  const prefix = sa.replace(/-controller$/, '');
  const present = Object.keys(SIDECAR_NEEDS).filter((s) => (ctrlPod['containers'] as K8s[]).some((c) => c['name'] === SIDECAR_NEEDS[s]?.container));
  problems.push(...rbacProblems(objects, sa, ns, prefix, present));
  if (nodePod['automountServiceAccountToken'] !== false) problems.push('node plugin mounts an API token it does not use');

  return { problems, controller, node: nodeConfig, mounts: fromNode };
}
