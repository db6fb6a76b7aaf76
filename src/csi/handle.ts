/**
 * The per-RPC choke point: lock, child logger, timing, error → status, and the
 * one place that turns a promise into grpc-js's callback (grpc-js ignores the
 * promise an async handler returns, so a rejection would hang the call).
 */
import { status, type sendUnaryData, type ServerUnaryCall } from '@grpc/grpc-js';
import type { Logger } from 'pino';
import type { KeyedLocks } from '../domain/locks.js';
import { codeName, toStatus } from './status.js';

export interface RpcOptions<Req> {
  /** Ids worth logging (never secrets). */
  ids?: (req: Req) => Record<string, string>;
  /** Keys to lock for the call's duration. */
  locks?: (req: Req) => string[];
  /** Log level of the closing line (Probe logs at trace). */
  level?: 'trace' | 'debug' | 'info';
}

export type UnaryHandler<Req, Res> = (call: ServerUnaryCall<Req, Res>, callback: sendUnaryData<Res>) => void;

/** Told of every finished call: its method, status name ('OK', 'NOT_FOUND', …) and duration. */
export type RpcObserver = (method: string, code: string, seconds: number) => void;

/** Gives a failure its meaning before it is mapped (e.g. storage/gone.ts: a vanished share is UNAVAILABLE). */
export type Translate = (e: unknown) => Promise<unknown>;

export function makeHandle(
  root: Logger,
  locks: KeyedLocks,
  observe: RpcObserver = () => undefined,
  translate: Translate = (e) => Promise.resolve(e),
) {
  return function handle<Req, Res>(
    method: string,
    // Req and Res come from where the handler goes (the generated IdentityHandlers, NodeHandlers…):
    // fn's request is the proto's message type, and a reply literal is checked against the proto's
    // reply field by field. Options may take any part of the request (e.g. { volume_id: string }).
    // fn may answer at once (capabilities, plugin info): a throw is caught in `run` all the same.
    options: RpcOptions<NoInfer<Req>>,
    fn: (req: Req, log: Logger) => NoInfer<Res> | Promise<NoInfer<Res>>,
  ): UnaryHandler<Req, Res> {
    return (call, callback) => {
      const started = performance.now();
      const req = call.request;
      let ids: Record<string, string> = {};
      try {
        ids = options.ids?.(req) ?? {};
      } catch {
        ids = {};
      }
      const log = root.child({ rpc: method, ...ids });
      const run = async (): Promise<Res> => {
        const release = locks.acquire(options.locks?.(req) ?? []);
        try {
          return await fn(req, log);
        } catch (e) {
          throw await translate(e).catch(() => e);
        } finally {
          release();
        }
      };
      run().then(
        (res) => {
          log[options.level ?? 'info']({ code: 'OK', durationMs: elapsed(started) }, `${method} OK`);
          observe(method, 'OK', (performance.now() - started) / 1000);
          callback(null, res);
        },
        (e: unknown) => {
          const s = toStatus(e);
          const line = { code: codeName(s.code), durationMs: elapsed(started), error: s.details };
          if (s.code === status.INTERNAL) log.error(line, `${method} failed`);
          else log.info(line, `${method} ${codeName(s.code)}`);
          observe(method, codeName(s.code), (performance.now() - started) / 1000);
          callback({ code: s.code, details: s.details, name: codeName(s.code), message: s.details });
        },
      );
    };
  };
}

export type Handle = ReturnType<typeof makeHandle>;

function elapsed(started: number): number {
  return Math.round((performance.now() - started) * 10) / 10;
}
