/**
 * A plain CSI client on the unix socket, talking to the driver as kubelet and
 * the sidecars do. The demo, the tests and the benchmark use it; the driver
 * itself does not. Calls resolve to the reply or reject with grpc-js's
 * ServiceError (code, details), its message prefixed with the method.
 */
import { credentials, type Client, type ServiceError } from '@grpc/grpc-js';
import { loadCsi } from '../src/csi/proto.js';

// `any` fields: the demo and the tests read replies field by field.
export type Call = (method: string, request?: object) => Promise<Record<string, any>>;

export interface CsiClient {
  identity: Call;
  controller: Call;
  node: Call;
  close(): void;
}

function caller(client: Client, deadlineMs: number): Call {
  return (method, request = {}) =>
    new Promise((resolve, reject) => {
      const fn = (client as unknown as Record<string, (...a: unknown[]) => void>)[method];
      if (fn === undefined) return reject(new Error(`no method ${method}`));
      fn.call(client, request, { deadline: Date.now() + deadlineMs }, (err: ServiceError | null, res: Record<string, unknown>) => {
        if (err === null) return resolve(res);
        err.message = `${method}: ${err.message}`;
        reject(err);
      });
    });
}

/** `endpoint`: unix:///abs/path or a bare socket path. */
export function connect(endpoint: string, options: { deadlineMs?: number } = {}): CsiClient {
  const csi = loadCsi();
  const target = endpoint.startsWith('unix://') ? endpoint : `unix://${endpoint}`;
  const deadline = options.deadlineMs ?? 120_000;
  const made = [csi.Identity, csi.Controller, csi.Node].map((C) => new C(target, credentials.createInsecure()));
  const [identity, controller, node] = made as unknown as [Client, Client, Client];
  return {
    identity: caller(identity, deadline),
    controller: caller(controller, deadline),
    node: caller(node, deadline),
    close: () => made.forEach((c) => c.close()),
  };
}
