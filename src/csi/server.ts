/**
 * The gRPC server on a unix socket: a stale socket file is replaced, the new
 * one is not world-writable, and shutdown lets in-flight calls finish (bounded).
 */
import { chmod, lstat, mkdir, unlink } from 'node:fs/promises';
import { connect } from 'node:net';
import { dirname } from 'node:path';
import { Server, ServerCredentials } from '@grpc/grpc-js';
import type { Logger } from 'pino';
import type { ControllerHandlers } from './generated/csi/v1/Controller.js';
import type { IdentityHandlers } from './generated/csi/v1/Identity.js';
import type { NodeHandlers } from './generated/csi/v1/Node.js';
import { loadCsi } from './proto.js';

/** The named methods of a generated service, without grpc-js's catch-all index signature. */
type Methods<T> = { [K in keyof T as string extends K ? never : K]: T[K] };

/** GetSnapshot (CSI 1.12, alpha) is not served: grpc-js answers UNIMPLEMENTED for a method without a handler. */
export type ControllerService = Omit<Methods<ControllerHandlers>, 'GetSnapshot'>;

export interface Services {
  identity: IdentityHandlers;
  controller?: ControllerService;
  node?: NodeHandlers;
}

export interface RunningServer {
  shutdown(graceMs?: number): Promise<void>;
}

/** Replaces a socket nobody listens on; one that answers belongs to a running server, left alone. */
async function clearStaleSocket(path: string): Promise<void> {
  const st = await lstat(path).catch(() => undefined);
  if (st === undefined) return;
  if (!st.isSocket()) throw new Error(`${path} exists and is not a socket; refusing to replace it`);
  if (await answers(path)) throw new Error(`another process is serving on ${path}; refusing to take its socket`);
  await unlink(path);
}

function answers(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const probe = connect(path);
    probe.once('connect', () => {
      probe.destroy();
      resolve(true);
    });
    probe.once('error', () => resolve(false)); // ECONNREFUSED: its server is gone
  });
}

export async function startServer(socketPath: string, services: Services, log: Logger): Promise<RunningServer> {
  const csi = loadCsi();
  const server = new Server({ 'grpc.max_receive_message_length': 16 * 1024 * 1024 });
  server.addService(csi.Identity.service, services.identity);
  if (services.controller) server.addService(csi.Controller.service, services.controller);
  if (services.node) server.addService(csi.Node.service, services.node);

  await mkdir(dirname(socketPath), { recursive: true });
  await clearStaleSocket(socketPath);
  // The socket is created with mode 0660: kubelet and the sidecars run as root
  // or share our group; nobody else may drive the driver.
  const previous = process.umask(0o117);
  try {
    await new Promise<void>((resolve, reject) => {
      server.bindAsync(`unix://${socketPath}`, ServerCredentials.createInsecure(), (err) => (err ? reject(err) : resolve()));
    });
  } finally {
    process.umask(previous);
  }
  // grpc-js may create the socket outside the umask window; make sure.
  await chmod(socketPath, 0o660);
  log.info({ socket: socketPath }, 'serving CSI');

  return {
    async shutdown(graceMs = 10_000) {
      await new Promise<void>((resolve) => {
        const timer = setTimeout(() => {
          log.warn({ graceMs }, 'in-flight calls did not finish in time; forcing shutdown');
          server.forceShutdown();
          resolve();
        }, graceMs);
        server.tryShutdown(() => {
          clearTimeout(timer);
          resolve();
        });
      });
      await unlink(socketPath).catch(() => undefined);
    },
  };
}
