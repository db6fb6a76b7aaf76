/**
 * The install checker is only worth something if it fails: each case breaks
 * one thing in the rendered defaults and expects the checker to name it.
 */
import { describe, expect, it } from 'vitest';
import { checkInstall } from './install.js';
import { container, one, podSpec, render, type K8s } from './render.js';

const fresh = (): K8s[] => render();
const node = (o: K8s[]) => podSpec(o, 'DaemonSet');
const ctrl = (o: K8s[]) => podSpec(o, 'Deployment');
const mountOf = (c: K8s, path: string) => (c['volumeMounts'] as K8s[]).find((m) => m['mountPath'] === path) as K8s;

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
});
