/**
 * The install checker is only worth something if it fails: each case breaks
 * one thing in the rendered defaults and expects the checker to name it.
 */
import { describe, expect, it } from 'vitest';
import { checkInstall } from './install.js';
import { all, container, one, podSpec, render, type K8s } from './render.js';

const fresh = (): K8s[] => render();
const node = (o: K8s[]) => podSpec(o, 'DaemonSet');
const ctrl = (o: K8s[]) => podSpec(o, 'Deployment');
const mountOf = (c: K8s, path: string) => (c['volumeMounts'] as K8s[]).find((m) => m['mountPath'] === path) as K8s;
const planeSet = (o: K8s[]) => one(o, 'DaemonSet', 'fd-filedriver-data-plane');
const plane = (o: K8s[]) => container(planeSet(o)['spec'].template.spec, 'data-plane');

describe('install checker', () => {
  it('finds nothing wrong with the defaults', () => {
    expect(checkInstall(fresh()).problems).toEqual([]);
  });

  it.each<[string, (o: K8s[]) => void, RegExp]>([
    ['kubelet dir without Bidirectional', (o) => (mountOf(container(node(o), 'filedriver'), '/var/lib/kubelet')['mountPropagation'] = 'None'), /lacks \/var\/lib\/kubelet with Bidirectional/],
    ['a share without HostToContainer', (o) => delete mountOf(container(ctrl(o), 'filedriver'), '/filedriver/hosts/main')['mountPropagation'], /mount main lacks HostToContainer/],
    [
      'the share bound directly',
      (o) => {
        const c = container(node(o), 'filedriver');
        mountOf(c, '/filedriver/hosts/main')['mountPath'] = '/filedriver/hosts/main/main';
      },
      /binds the share itself, so it always looks mounted/,
    ],
    ['a mount missing from one pod', (o) => (container(node(o), 'filedriver')['args'] = container(node(o), 'filedriver')['args'].map((a: string) => a.replace('--mount=main=', '--mount=other='))), /pods see different mounts/],
    ['a sidecar on another socket', (o) => (container(ctrl(o), 'csi-provisioner')['args'][0] = '--csi-address=/run/csi.sock'), /csi-provisioner: --csi-address \/run\/csi.sock/],
    ['a wrong registration path', (o) => (container(node(o), 'node-driver-registrar')['args'][1] = '--kubelet-registration-path=/var/lib/kubelet/plugins/x/csi.sock'), /registrar registers/],
    [
      'an attacher that cannot patch status',
      (o) => {
        const role = one(o, 'ClusterRole', 'fd-filedriver-attacher');
        role['rules'] = role['rules'].filter((r: K8s) => !r['resources'].includes('volumeattachments/status'));
      },
      /attacher cannot patch volumeattachments\/status/,
    ],
    ['a provisioner without its lease', (o) => (one(o, 'RoleBinding', 'fd-filedriver-provisioner')['subjects'][0].name = 'someone'), /Role fd-filedriver-provisioner is not bound/],
    ['a controller as root', (o) => (ctrl(o)['securityContext'].runAsUser = 0), /controller pod may run as root/],
    ['an unpinned sidecar', (o) => (container(ctrl(o), 'csi-resizer')['image'] = 'registry.k8s.io/sig-storage/csi-resizer:latest'), /csi-resizer: image .* is not pinned/],
    ['liveness on the wrong port', (o) => (container(ctrl(o), 'liveness-probe')['args'][1] = '--health-port=9999'), /livenessProbe port 9808 is not the livenessprobe's --health-port 9999/],
    ['a class for another driver', (o) => (one(o, 'StorageClass', 'filedriver-raw')['provisioner'] = 'other.dev'), /StorageClass filedriver-raw names driver other.dev/],
    [
      'a grant beyond the sidecar\'s own RBAC',
      (o) => one(o, 'ClusterRole', 'fd-filedriver-resizer')['rules'].push({ apiGroups: [''], resources: ['persistentvolumeclaims'], verbs: ['patch'] }),
      /ClusterRole fd-filedriver-resizer grants patch persistentvolumeclaims, which the resizer's own RBAC does not/,
    ],
    [
      'a provisioner that cannot watch snapshots',
      (o) => {
        const rule = (one(o, 'ClusterRole', 'fd-filedriver-provisioner')['rules'] as K8s[]).find((r) => r['resources'].includes('volumesnapshots')) as K8s;
        rule['verbs'] = ['get', 'list'];
      },
      /provisioner cannot get,list,watch,update volumesnapshots/,
    ],
    ['a sidecar without its health endpoint', (o) => delete container(ctrl(o), 'csi-attacher')['livenessProbe'], /csi-attacher: no --http-endpoint with a \/healthz\/leader-election liveness probe/],
    [
      'the deprecated registrar probe',
      (o) => (container(node(o), 'node-driver-registrar')['livenessProbe'] = { exec: { command: ['/csi-node-driver-registrar', '--mode=kubelet-registration-probe'] } }),
      /registrar: liveness is not its --http-endpoint \/healthz[\s\S]*deprecated --mode=kubelet-registration-probe/,
    ],
    ['a node plugin on any OS', (o) => delete node(o)['nodeSelector'], /DaemonSet fd-filedriver-node may run on a node that is not linux/],
    ['a controller placed anywhere', (o) => delete ctrl(o)['affinity'], /controller may land on a node without mount\(s\) main/],
    ['a data plane replaced by upgrades', (o) => (planeSet(o)['spec'].updateStrategy = { type: 'RollingUpdate' }), /data plane is replaced by upgrades/],
    [
      'a data plane whose exports stay in its pod',
      (o) => delete mountOf(plane(o), '/var/lib/kubelet/plugins/filedriver.dev')['mountPropagation'],
      /data plane has \/var\/lib\/kubelet\/plugins\/filedriver\.dev\/dp at .* with None propagation, not the host's own with Bidirectional/,
    ],
    ['a data plane on another kubelet dir', (o) => (plane(o)['args'][1] = '--kubelet-dir=/var/lib/k0s/kubelet'), /data plane runs with kubelet dir \/var\/lib\/k0s\/kubelet/],
    ['a node plugin running its own daemon beside the data plane', (o) => (container(node(o), 'filedriver')['args'] = container(node(o), 'filedriver')['args'].filter((a: string) => !a.startsWith('--data-plane'))), /node plugin runs --data-plane managed beside the data-plane DaemonSet/],
    [
      'a node plugin waiting for a data plane that is not there',
      (o) => o.splice(o.indexOf(planeSet(o)), 1),
      /node plugin runs --data-plane external, and no data-plane DaemonSet runs the daemon/,
    ],
    ['a data plane placed unlike the node plugin', (o) => (planeSet(o)['spec'].template.spec.tolerations = []), /data plane: tolerations differs from the node plugin's/],
    ['a data plane that a probe restarts', (o) => (plane(o)['livenessProbe'] = { exec: { command: ['true'] } }), /data plane has a probe that restarts it/],
    ['a data plane without the shares', (o) => (plane(o)['volumeMounts'] = plane(o)['volumeMounts'].filter((m: K8s) => m['name'] !== 'mount-main')), /data-plane: mount main at \/filedriver\/hosts\/main\/main is on no volume/],
    ['a node plugin that cannot see the exports', (o) => (mountOf(container(node(o), 'filedriver'), '/var/lib/kubelet')['mountPropagation'] = 'None'), /node plugin does not see the data plane's \/var\/lib\/kubelet\/plugins\/filedriver\.dev\/x/],
  ])('reports %s', (_what, breakIt, message) => {
    const objects = fresh();
    breakIt(objects);
    expect(checkInstall(objects).problems.join('\n')).toMatch(message);
  });

  it('runs the driver args through serve, which refuses an unknown flag', () => {
    const objects = fresh();
    container(node(objects), 'filedriver')['args'].push('--mountt=x=/y');
    expect(() => checkInstall(objects)).toThrow(/Unknown option '--mountt'/);
  });

  it('runs the data plane\'s args through data-plane, which refuses an unknown flag', () => {
    const objects = fresh();
    plane(objects)['args'].push('--kubelet=/x');
    expect(() => checkInstall(objects)).toThrow(/Unknown option '--kubelet'/);
  });
});

describe('install checker on nfs mounts', () => {
  const nfs = (): K8s[] => render('nfs-values.yaml');
  const share = (o: K8s[], mount: string) => all(o, 'DaemonSet').find((d) => d['metadata'].name === `fd-filedriver-nfs-${mount}`) as K8s;

  it('finds nothing wrong with the nfs example', () => {
    expect(checkInstall(nfs()).problems).toEqual([]);
  });

  it.each<[string, (o: K8s[]) => void, RegExp]>([
    [
      'an export mounted into the node plugin',
      (o) => node(o)['volumes'].push({ name: 'filer1', persistentVolumeClaim: { claimName: 'fd-filedriver-mount-filer1' } }),
      /node plugin pod mounts filer1 from the network: a dead filer would keep it from starting/,
    ],
    ['a share pod binding elsewhere', (o) => (share(o, 'filer2')['spec'].template.spec.volumes[1].hostPath.path = '/srv/other'), /nfs share filer2: binds onto \/srv\/other\/filer2, the driver looks at host:\/var\/lib\/filedriver-shares/],
    ['a share pod without propagation', (o) => delete share(o, 'filer1')['spec'].template.spec.containers[0].volumeMounts[1].mountPropagation, /nfs share filer1: its bind cannot reach the host/],
    ['a share pod placed unlike the node plugin', (o) => (share(o, 'filer1')['spec'].template.spec.tolerations = []), /nfs share filer1: tolerations differs/],
    ['no mountpoint made before registration', (o) => delete node(o)['initContainers'], /node plugin does not make the mountpoint of nfs mount filer1/],
  ])('reports %s', (_what, breakIt, message) => {
    const objects = nfs();
    breakIt(objects);
    expect(checkInstall(objects).problems.join('\n')).toMatch(message);
  });
});
