/**
 * A CSI client as the sidecars use it: plain gRPC over the unix socket, with
 * promise-returning calls that resolve to the reply or reject with the status.
 */
import { credentials, type Client, type ServiceError } from '@grpc/grpc-js';
import { loadCsi } from '../../src/csi/proto.js';

export type Call = (method: string, request?: object) => Promise<any>;

export interface CsiClient {
  identity: Call;
  controller: Call;
  node: Call;
  close(): void;
}

function caller(client: Client): Call {
  return (method, request = {}) =>
    new Promise((resolve, reject) => {
      const fn = (client as unknown as Record<string, Function>)[method];
      if (fn === undefined) throw new Error(`no method ${method}`);
      fn.call(client, request, { deadline: Date.now() + 120_000 }, (err: ServiceError | null, res: unknown) =>
        err ? reject(err) : resolve(res),
      );
    });
}

export function connect(endpoint: string): CsiClient {
  const csi = loadCsi();
  const target = endpoint.startsWith('unix://') ? endpoint : `unix://${endpoint}`;
  const identity = new csi.Identity(target, credentials.createInsecure());
  const controller = new csi.Controller(target, credentials.createInsecure());
  const node = new csi.Node(target, credentials.createInsecure());
  return {
    identity: caller(identity),
    controller: caller(controller),
    node: caller(node),
    close() {
      identity.close();
      controller.close();
      node.close();
    },
  };
}

/** The gRPC status code a call failed with (or 'OK'). */
export async function codeOf(p: Promise<unknown>): Promise<number | 'OK'> {
  try {
    await p;
    return 'OK';
  } catch (e) {
    return (e as ServiceError).code;
  }
}
