/**
 * A CSI client as the sidecars use it: plain gRPC over the unix socket, with
 * promise-returning calls that resolve to the reply or reject with the status.
 */
import type { ServiceError } from '@grpc/grpc-js';

export { connect, type Call, type CsiClient } from '../../demo/client.js';

/** The gRPC status code a call failed with (or 'OK'). */
export async function codeOf(p: Promise<unknown>): Promise<number | 'OK'> {
  try {
    await p;
    return 'OK';
  } catch (e) {
    return (e as ServiceError).code;
  }
}
