/** The one table from error kinds to gRPC status codes (CSI spec error tables). */
import { status } from '@grpc/grpc-js';
import { CommandFailed } from '../system/command.js';
import { describe, isDriverError, type ErrorKind } from '../domain/errors.js';

const CODES: Record<ErrorKind, status> = {
  invalid: status.INVALID_ARGUMENT,
  notFound: status.NOT_FOUND,
  alreadyExists: status.ALREADY_EXISTS,
  outOfRange: status.OUT_OF_RANGE,
  exhausted: status.RESOURCE_EXHAUSTED,
  busy: status.ABORTED,
  precondition: status.FAILED_PRECONDITION,
  unavailable: status.UNAVAILABLE,
  unimplemented: status.UNIMPLEMENTED,
  internal: status.INTERNAL,
};

export interface StatusError {
  code: status;
  details: string;
}

/** Whatever was thrown, as a status the client can act on. Nothing else reaches grpc-js. */
export function toStatus(e: unknown): StatusError {
  if (isDriverError(e)) return { code: CODES[e.kind], details: e.message };
  if (e instanceof CommandFailed) return { code: status.INTERNAL, details: e.message };
  return { code: status.INTERNAL, details: `internal error: ${describe(e)}` };
}

export function codeName(code: status): string {
  // A numeric enum's reverse lookup is typed string, but a code grpc-js does not name has no entry.
  return code in status ? status[code] : String(code);
}
