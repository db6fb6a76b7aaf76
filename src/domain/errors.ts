/**
 * The driver's one error type. Use cases throw these; the gRPC layer maps
 * `kind` to a status code (src/csi/status.ts). Nothing else reaches a client.
 */
export type ErrorKind =
  'invalid' | 'notFound' | 'alreadyExists' | 'outOfRange' | 'exhausted' | 'busy' | 'precondition' | 'unavailable' | 'unimplemented' | 'internal';

/**
 * Why, where a caller acts on it (not only the client): named here so no
 * caller matches message text.
 * - imageLocked: another process holds the image's qemu lock.
 */
export type ErrorReason = 'imageLocked';

export class DriverError extends Error {
  constructor(
    readonly kind: ErrorKind,
    message: string,
    options?: { cause?: unknown; reason?: ErrorReason },
  ) {
    super(message, options);
    this.name = 'DriverError';
    this.reason = options?.reason;
  }

  readonly reason: ErrorReason | undefined;
}

export const invalid = (msg: string): DriverError => new DriverError('invalid', msg);
export const notFound = (msg: string): DriverError => new DriverError('notFound', msg);
export const alreadyExists = (msg: string): DriverError => new DriverError('alreadyExists', msg);
export const outOfRange = (msg: string): DriverError => new DriverError('outOfRange', msg);
export const exhausted = (msg: string): DriverError => new DriverError('exhausted', msg);
export const busy = (msg: string): DriverError => new DriverError('busy', msg);
export const precondition = (msg: string): DriverError => new DriverError('precondition', msg);
/** The image is open in another qemu process (its lock): FAILED_PRECONDITION, and callers can tell. */
export const imageLocked = (msg: string): DriverError => new DriverError('precondition', msg, { reason: 'imageLocked' });
export const unavailable = (msg: string): DriverError => new DriverError('unavailable', msg);
export const internal = (msg: string, cause?: unknown): DriverError => new DriverError('internal', msg, { cause });

export function isDriverError(e: unknown): e is DriverError {
  return e instanceof DriverError;
}

/** A best-effort one-line description of anything thrown. */
export function describe(e: unknown): string {
  if (e instanceof Error) return e.message;
  return String(e);
}
