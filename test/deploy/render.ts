/**
 * The real Helm binary (scripts/helm.sh, from an npm package) and helpers to
 * look into what it renders: every object parsed with `yaml`, nothing by eye.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { parse, parseAllDocuments, stringify } from 'yaml';

export const ROOT = resolve(import.meta.dirname, '../..');
export const CHART = join(ROOT, 'charts/filedriver');
export const CI_VALUES = readdirSync(join(CHART, 'ci')).filter((f) => f.endsWith('-values.yaml')).sort();

/** A Kubernetes object as parsed; tests walk it with optional chaining. */
export type K8s = Record<string, any>;

export interface Run {
  ok: boolean;
  stdout: string;
  stderr: string;
}

/** Runs the bundled helm (or `kubectl` with first arg 'kubectl'). Never throws. */
export function tool(args: string[]): Run {
  try {
    const stdout = execFileSync('bash', [join(ROOT, 'scripts/helm.sh'), ...args], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
    return { ok: true, stdout, stderr: '' };
  } catch (e) {
    const err = e as { stdout?: string; stderr?: string };
    return { ok: false, stdout: err.stdout ?? '', stderr: err.stderr ?? '' };
  }
}

/** Values as helm arguments: a ci/ file name, or an object written to a temp file. */
function valuesArgs(values: string | object | undefined, dir: string): string[] {
  if (values === undefined) return [];
  if (typeof values === 'string') return ['-f', join(CHART, 'ci', values)];
  const file = join(dir, 'values.yaml');
  // YAML 1.1 quoting: Helm's parser reads a bare y, no or on as a boolean.
  writeFileSync(file, stringify(values, { version: '1.1' }));
  return ['-f', file];
}

export function helm(verb: 'lint' | 'template', values?: string | object, extra: string[] = []): Run {
  const dir = mkdtempSync(join(tmpdir(), 'fdtest-helm-'));
  try {
    const target = verb === 'lint' ? ['lint', '--strict', CHART] : ['template', 'fd', CHART, '--namespace', 'storage'];
    return tool([...target, ...valuesArgs(values, dir), ...extra]);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

export function parseObjects(text: string): K8s[] {
  return parseAllDocuments(text)
    .map((d) => {
      if (d.errors.length > 0) throw new Error(`unparsable YAML: ${d.errors[0]?.message ?? ''}`);
      return d.toJS() as K8s | null;
    })
    .filter((o): o is K8s => o !== null);
}

/** The APIs beyond Kubernetes' own that the chart can use, as `helm template` arguments. */
export const OPTIONAL_APIS = ['snapshot.storage.k8s.io/v1/VolumeSnapshotClass', 'monitoring.coreos.com/v1/ServiceMonitor', 'storage.k8s.io/v1/VolumeAttributesClass'];
export const apiArgs = (apis: string[]): string[] => apis.flatMap((a) => ['--api-versions', a]);

/** Renders and parses; fails the test with helm's message when rendering fails. */
export function render(values?: string | object, extra: string[] = []): K8s[] {
  const run = helm('template', values, extra);
  if (!run.ok) throw new Error(`helm template failed: ${run.stderr}`);
  return parseObjects(run.stdout);
}

export function all(objects: K8s[], kind: string): K8s[] {
  return objects.filter((o) => o['kind'] === kind);
}

export function one(objects: K8s[], kind: string, name?: string): K8s {
  const found = all(objects, kind).filter((o) => name === undefined || o['metadata']?.name === name);
  if (found.length !== 1) throw new Error(`expected one ${kind}${name === undefined ? '' : ` ${name}`}, found ${found.length}`);
  return found[0] as K8s;
}

/** The controller Deployment, or the node plugin's DaemonSet (not an nfs share's). */
export function workload(objects: K8s[], kind: 'Deployment' | 'DaemonSet'): K8s {
  const component = kind === 'Deployment' ? 'controller' : 'node';
  const found = all(objects, kind).filter((o) => o['spec'].template.metadata.labels['app.kubernetes.io/component'] === component);
  if (found.length !== 1) throw new Error(`expected one ${component} ${kind}, found ${found.length}`);
  return found[0] as K8s;
}

export function podSpec(objects: K8s[], kind: 'Deployment' | 'DaemonSet'): K8s {
  return workload(objects, kind)['spec'].template.spec;
}

export function container(pod: K8s, name: string): K8s {
  const c = (pod['containers'] as K8s[]).find((x) => x['name'] === name);
  if (c === undefined) throw new Error(`no container ${name}`);
  return c;
}

/** A source file under charts/filedriver (e.g. examples/optional-apis-values.yaml) as values. */
export function chartFile(path: string): object {
  return parse(readFileSync(join(CHART, path), 'utf8')) as object;
}

/** The value of `--name=value` in a container's args. */
export function flag(c: K8s, name: string): string | undefined {
  const prefix = `--${name}=`;
  return (c['args'] as string[] | undefined)?.find((a) => a.startsWith(prefix))?.slice(prefix.length);
}
