/**
 * What makes a rendered install consistent, as one list of problems (empty =
 * fine), so the chart's every option set and deploy/ get the same scrutiny:
 * the driver's args go through serve's real parser, sockets and mounts are
 * followed from flag to volume to host path, and RBAC is evaluated rule by rule.
 */
import { dirname, posix } from 'node:path';
import { parseDataPlane, type DataPlaneSettings } from '../../src/cli/data-plane.js';
import { parseServe } from '../../src/cli/serve.js';
import type { Config } from '../../src/config.js';
import { topologyKey } from '../../src/domain/topology.js';
import { MAX_SOCKET_PATH } from '../../src/system/data-plane.js';
import { all, container, flag, one, podSpec, workload, type K8s } from './render.js';
import { rbacProblems, SIDECAR_NEEDS } from './sidecar-rbac.js';

/** Kubernetes' $(VAR) expansion of args from the container's env (fieldRefs get stand-ins). */
function containerEnv(c: K8s): Record<string, string> {
  const env: Record<string, string> = {};
  for (const e of (c['env'] ?? []) as K8s[]) {
    const field = e['valueFrom']?.fieldRef?.fieldPath as string | undefined;
    env[e['name']] = e['value'] ?? (field === undefined ? '' : `<${field}>`);
  }
  return env;
}

/** A container's args as Kubernetes passes them ($(VAR) expanded). */
function expandedArgs(c: K8s, env: Record<string, string>): string[] {
  return ((c['args'] ?? []) as string[]).map((a) => a.replace(/\$\(([A-Z_]+)\)/g, (_, v: string) => env[v] ?? `$(${v})`));
}

/** The driver container's args through `filedriver serve`'s own parser. */
export function driverConfig(c: K8s): Config {
  const env = containerEnv(c);
  const args = expandedArgs(c, env);
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

/** The data-plane container's args through `filedriver data-plane`'s own parser. */
export function dataPlaneSettings(c: K8s): DataPlaneSettings {
  const env = containerEnv(c);
  const args = expandedArgs(c, env);
  if (args[0] !== 'data-plane') throw new Error(`data-plane container args start with ${String(args[0])}, not data-plane`);
  const settings = parseDataPlane(args.slice(1), env);
  if (settings === 'help') throw new Error('data-plane container asks for --help');
  return settings;
}

/**
 * Where a path inside a container is on the host, and with which propagation:
 * through the deepest hostPath volume mount that holds it.
 */
function hostView(pod: K8s, c: K8s, path: string): { host: string; propagation: string } | undefined {
  const vm = mountsOf(c)
    .filter((x) => inside(path, x['mountPath']))
    .sort((a, b) => b['mountPath'].length - a['mountPath'].length)[0];
  const host = vm === undefined ? undefined : (volumeOf(pod, vm['name'])?.['hostPath']?.path as string | undefined);
  if (vm === undefined || host === undefined) return undefined;
  return { host: posix.join(host, posix.relative(vm['mountPath'], path)), propagation: vm['mountPropagation'] ?? 'None' };
}

/** Checks one container's socket: the flag's path is on the volume the driver's socket is on. */
function socketOn(pod: K8s, c: K8s, socket: string, volume: string, problems: string[]): void {
  const vm = mountsOf(c).find((x) => x['name'] === volume);
  if (vm === undefined || posix.join(vm['mountPath'], 'csi.sock') !== socket) problems.push(`${c['name']}: socket ${socket} is not on volume ${volume}`);
  if (volumeOf(pod, volume) === undefined) problems.push(`no volume ${volume}`);
}

/**
 * nfs mounts: a share DaemonSet per mount binds the kubelet-mounted export onto
 * the host directory both driver pods look at, on the node plugin's nodes, and
 * the node plugin makes that mountpoint before it registers (so the node offers
 * the share even while its filer is down). The driver pods never mount the export.
 */
function nfsShareProblems(objects: K8s[], ctrlPod: K8s, nodePod: K8s, mounts: Record<string, string>, nodeConfig: Config): string[] {
  const problems: string[] = [];
  const shares = all(objects, 'DaemonSet').filter((d) => d['spec'].template.metadata.labels['app.kubernetes.io/component'] === 'nfs-share');
  for (const [what, pod] of [['controller', ctrlPod], ['node plugin', nodePod]] as const) {
    for (const v of pod['volumes'] as K8s[]) if (v['persistentVolumeClaim'] !== undefined || v['nfs'] !== undefined) problems.push(`${what} pod mounts ${v['name']} from the network: a dead filer would keep it from starting`);
  }
  const made = ((nodePod['initContainers'] ?? []) as K8s[]).flatMap((c) => (c['command'] as string[])[0] === 'mkdir' ? (c['command'] as string[]) : []);
  for (const ds of shares) {
    const mount = ds['spec'].template.metadata.labels['filedriver.dev/mount'] as string;
    const pod = ds['spec'].template.spec;
    const c = (pod['containers'] as K8s[])[0] as K8s;
    const vm = (path: string) => mountsOf(c).find((m) => m['mountPath'] === path);
    const claim = volumeOf(pod, vm('/nfs')?.['name'] ?? '')?.['persistentVolumeClaim']?.claimName as string | undefined;
    const pvc = all(objects, 'PersistentVolumeClaim').find((x) => x['metadata'].name === claim);
    const pv = all(objects, 'PersistentVolume').find((x) => x['metadata'].name === pvc?.['spec'].volumeName);
    if (pv?.['spec'].nfs === undefined) problems.push(`nfs share ${mount}: /nfs is not an nfs PersistentVolume's claim`);
    const shares = vm('/shares');
    const hostDir = volumeOf(pod, shares?.['name'] ?? '')?.['hostPath']?.path as string | undefined;
    if (shares?.['mountPropagation'] !== 'Bidirectional' || c['securityContext']?.privileged !== true) problems.push(`nfs share ${mount}: its bind cannot reach the host`);
    const script = ((c['args'] ?? []) as string[]).join('\n');
    if (!script.includes(`share=/shares/${mount}\n`) || !script.includes('mount --bind /nfs "$share"')) problems.push(`nfs share ${mount}: does not bind /nfs onto /shares/${mount}`);
    if (`host:${posix.join(hostDir ?? '?', mount)}` !== mounts[mount]) problems.push(`nfs share ${mount}: binds onto ${String(hostDir)}/${mount}, the driver looks at ${String(mounts[mount])}`);
    for (const key of ['nodeSelector', 'tolerations', 'affinity']) {
      if (JSON.stringify(pod[key]) !== JSON.stringify(nodePod[key])) problems.push(`nfs share ${mount}: ${key} differs from the node plugin's`);
    }
    const path = nodeConfig.mounts.find((m) => m.name === mount)?.path;
    if (path === undefined || !made.includes(path)) problems.push(`node plugin does not make the mountpoint of nfs mount ${mount} before it starts`);
  }
  return problems;
}

/**
 * The data plane: with its DaemonSet, the node plugin only connects
 * (external), and the daemon runs where the plugin looks for it: the same
 * kubelet and driver name, its socket and FUSE exports at the same paths on
 * the host, reaching the host (Bidirectional) and the node plugin, the images
 * at the paths the node plugin gives it, on every node the plugin runs on.
 * Never replaced by an upgrade, never restarted by a probe. Without it, the
 * node plugin runs the daemon itself (managed).
 */
function dataPlaneProblems(objects: K8s[], nodePod: K8s, node: K8s, nodeConfig: Config, fromNode: Record<string, string>): { problems: string[]; settings?: DataPlaneSettings } {
  const problems: string[] = [];
  const sets = all(objects, 'DaemonSet').filter((d) => d['spec'].template.metadata.labels['app.kubernetes.io/component'] === 'data-plane');
  const ds = sets[0];
  if (ds === undefined) {
    if (nodeConfig.dataPlane !== 'managed') problems.push(`node plugin runs --data-plane ${nodeConfig.dataPlane}, and no data-plane DaemonSet runs the daemon`);
    return { problems };
  }
  if (sets.length > 1) problems.push(`${sets.length} data-plane DaemonSets`);
  if (nodeConfig.dataPlane !== 'external') problems.push(`node plugin runs --data-plane ${nodeConfig.dataPlane} beside the data-plane DaemonSet: two daemons on one socket`);
  if (ds['spec'].updateStrategy?.type !== 'OnDelete') problems.push(`data plane is replaced by upgrades (updateStrategy ${JSON.stringify(ds['spec'].updateStrategy)}), ending the qcow2 volumes' I/O`);
  const pod = ds['spec'].template.spec;
  const containers = pod['containers'] as K8s[];
  if (containers.length !== 1) problems.push(`data-plane pod has ${containers.length} containers`);
  const c = containers[0] as K8s;
  const settings = dataPlaneSettings(c);
  const { kubeletDir, driverName, qemu } = settings.config;
  if (kubeletDir !== nodeConfig.kubeletDir || driverName !== nodeConfig.driverName || qemu !== nodeConfig.qemu) {
    problems.push(`data plane runs with kubelet dir ${kubeletDir}, driver ${driverName}, qemu ${String(qemu)}; the node plugin with ${nodeConfig.kubeletDir}, ${nodeConfig.driverName}, ${String(nodeConfig.qemu)}`);
  }
  const pluginDir = `${nodeConfig.kubeletDir}/plugins/${nodeConfig.driverName}`;
  if (settings.dir !== `${pluginDir}/dp`) problems.push(`data plane's socket directory is ${settings.dir}, not ${pluginDir}/dp`);
  if (Buffer.byteLength(`${settings.dir}/qmp.sock`) > MAX_SOCKET_PATH) problems.push(`data plane's socket ${settings.dir}/qmp.sock is longer than ${MAX_SOCKET_PATH} bytes`);
  // The QMP socket and the exports: the same host path in both pods (paths go over QMP).
  for (const path of [settings.dir, `${pluginDir}/x`]) {
    const dp = hostView(pod, c, path);
    if (dp?.host !== path || dp.propagation !== 'Bidirectional') problems.push(`data plane has ${path} ${dp === undefined ? 'on no hostPath' : `at ${dp.host} on the host with ${dp.propagation} propagation`}, not the host's own with Bidirectional`);
    const seen = hostView(nodePod, node, path);
    if (seen?.host !== path || !['HostToContainer', 'Bidirectional'].includes(seen.propagation)) problems.push(`node plugin does not see the data plane's ${path} (host ${String(seen?.host)}, ${String(seen?.propagation)} propagation)`);
  }
  if (hostView(pod, c, '/dev')?.host !== '/dev') problems.push('data plane lacks /dev (FUSE)');
  const sec = c['securityContext'] ?? {};
  if (sec.privileged !== true || sec.runAsUser !== 0) problems.push('data plane is not privileged root');
  // The images, at the paths the node plugin gives the daemon.
  const shares = mountSources(pod, c, nodeConfig, problems);
  if (JSON.stringify(shares) !== JSON.stringify(fromNode)) problems.push(`data plane sees other mounts than the node plugin: ${JSON.stringify(shares)} vs ${JSON.stringify(fromNode)}`);
  for (const key of ['nodeSelector', 'tolerations', 'affinity']) {
    if (JSON.stringify(pod[key]) !== JSON.stringify(nodePod[key])) problems.push(`data plane: ${key} differs from the node plugin's`);
  }
  if (c['image'] !== node['image']) problems.push(`data plane runs ${c['image']}, the node plugin ${node['image']}`);
  if (c['livenessProbe'] !== undefined || c['startupProbe'] !== undefined) problems.push('data plane has a probe that restarts it');
  const ready = c['readinessProbe'];
  if (ready !== undefined && JSON.stringify(ready.exec?.command) !== JSON.stringify(['test', '-S', `${settings.dir}/qmp.sock`])) problems.push(`data plane readiness ${JSON.stringify(ready)} is not its QMP socket`);
  if (!((pod['terminationGracePeriodSeconds'] ?? 30) >= 60)) problems.push('data plane has less than 60 s to end its exports');
  if (pod['automountServiceAccountToken'] !== false) problems.push('data plane mounts an API token it does not use');
  return { problems, settings };
}

export interface Install {
  problems: string[];
  controller: Config;
  node: Config;
  /** The data-plane DaemonSet's settings; undefined without it. */
  dataPlane: DataPlaneSettings | undefined;
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
  const config = controller;
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
  const deployment = workload(objects, 'Deployment')['spec'];
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

  // Images: pinned, by a release tag and optionally a digest.
  const dpContainers = all(objects, 'DaemonSet').filter((d) => d['spec'].template.metadata.labels['app.kubernetes.io/component'] === 'data-plane').flatMap((d) => d['spec'].template.spec.containers as K8s[]);
  for (const c of [...(ctrlPod['containers'] as K8s[]), ...(nodePod['containers'] as K8s[]), ...dpContainers]) {
    const m = /:([^:/@]+)(@sha256:[a-f0-9]{64})?$/.exec(c['image'] as string);
    const tag = m?.[1];
    if (tag === undefined || tag === 'latest') problems.push(`${c['name']}: image ${c['image']} is not pinned`);
    else if (c['image'].includes('sig-storage/') && !/^v\d+\.\d+\.\d+$/.test(tag)) problems.push(`${c['name']}: sidecar tag ${tag} is not a release`);
  }

  // Sidecars: each leader-elected one serves --http-endpoint, and its liveness asks whether it still holds its lease.
  for (const c of ctrlPod['containers'] as K8s[]) {
    if (!(c['args'] as string[] | undefined)?.includes('--leader-election')) continue;
    const port = Number(flag(c, 'http-endpoint')?.replace(/^.*:/, ''));
    const named = (c['ports'] as K8s[] | undefined)?.find((p) => p['name'] === c['livenessProbe']?.httpGet?.port);
    if (!(port > 0) || named?.['containerPort'] !== port || c['livenessProbe']?.httpGet?.path !== '/healthz/leader-election') {
      problems.push(`${c['name']}: no --http-endpoint with a /healthz/leader-election liveness probe on it`);
    }
  }
  const regPort = Number(flag(registrar, 'http-endpoint')?.replace(/^.*:/, ''));
  const regProbe = registrar['livenessProbe']?.httpGet;
  if (!(regPort > 0) || regProbe?.path !== '/healthz' || (registrar['ports'] as K8s[] | undefined)?.find((p) => p['name'] === regProbe?.port)?.['containerPort'] !== regPort) {
    problems.push('node-driver-registrar: liveness is not its --http-endpoint /healthz');
  }
  if (JSON.stringify(registrar).includes('kubelet-registration-probe')) problems.push('node-driver-registrar: uses the deprecated --mode=kubelet-registration-probe');

  // Placement: linux nodes only; the controller only where every share is.
  const workloads = [...all(objects, 'Deployment'), ...all(objects, 'DaemonSet')];
  for (const w of workloads) {
    if (w['spec'].template.spec.nodeSelector?.['kubernetes.io/os'] !== 'linux') problems.push(`${w['kind']} ${w['metadata'].name} may run on a node that is not linux`);
  }
  const terms = (ctrlPod['affinity']?.nodeAffinity?.requiredDuringSchedulingIgnoredDuringExecution?.nodeSelectorTerms ?? []) as K8s[];
  const placedByAdmin = Object.keys(ctrlPod['nodeSelector'] ?? {}).some((k) => k !== 'kubernetes.io/os');
  const everyTermHas = (key: string) =>
    terms.length > 0 && terms.every((t) => ((t['matchExpressions'] ?? []) as K8s[]).some((e) => e['key'] === key && e['operator'] === 'In' && e['values']?.join() === 'true'));
  // The keys the node plugins report (the driver's own topologyKey), which kubelet turns into Node labels.
  const unplaced = config.mounts.filter((m) => !everyTermHas(topologyKey(name, m.name))).map((m) => m.name);
  if (unplaced.length > 0 && !placedByAdmin && terms.length === 0) problems.push(`controller may land on a node without mount(s) ${unplaced.join(', ')}`);

  problems.push(...nfsShareProblems(objects, ctrlPod, nodePod, fromNode, nodeConfig));
  const dataPlane = dataPlaneProblems(objects, nodePod, node, nodeConfig, fromNode);
  problems.push(...dataPlane.problems);

  // Service names are DNS labels.
  for (const svc of all(objects, 'Service')) if (svc['metadata'].name.length > 63) problems.push(`Service ${svc['metadata'].name} is longer than 63 characters`);

  // RBAC: each controller sidecar's own roles cover what it does.
  const sa = ctrlPod['serviceAccountName'] as string;
  const ns = workload(objects, 'Deployment')['metadata'].namespace as string;
  const prefix = sa.replace(/-controller$/, '');
  const present = Object.keys(SIDECAR_NEEDS).filter((s) => (ctrlPod['containers'] as K8s[]).some((c) => c['name'] === SIDECAR_NEEDS[s]?.container));
  problems.push(...rbacProblems(objects, sa, ns, prefix, present));
  if (nodePod['automountServiceAccountToken'] !== false) problems.push('node plugin mounts an API token it does not use');

  return { problems, controller, node: nodeConfig, dataPlane: dataPlane.settings, mounts: fromNode };
}
