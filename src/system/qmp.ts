/**
 * A minimal QMP (QEMU Machine Protocol) client for qemu-storage-daemon's
 * monitor socket: greeting, qmp_capabilities, then one command at a time,
 * one JSON object per line.
 */
import { createConnection, type Socket } from 'node:net';
import { describe, internal, isDriverError } from '../domain/errors.js';

type QmpMessage = Record<string, unknown>;
export type QmpValue = string | number | boolean | bigint | null | QmpValue[] | { [key: string]: QmpValue };
type QmpReply = { ok: true; value: unknown } | { ok: false; error: string };
const BIG = 'bigint~';

/** A minimal QMP client: greeting, qmp_capabilities, then one command at a time, JSON per line. */
export class Qmp {
  private buffer = '';
  private readonly inbox: QmpMessage[] = [];
  private wake: (() => void) | undefined;
  private failure: Error | undefined;
  private lastId = 0;

  private constructor(
    private readonly socket: Socket,
    private readonly deadline: number,
  ) {
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => {
      this.buffer += chunk;
      for (let nl = this.buffer.indexOf('\n'); nl >= 0; nl = this.buffer.indexOf('\n')) {
        const line = this.buffer.slice(0, nl).trim();
        this.buffer = this.buffer.slice(nl + 1);
        if (line !== '') this.inbox.push(JSON.parse(line) as QmpMessage);
      }
      this.wake?.();
    });
    const fail = (e: Error): void => {
      this.failure ??= e;
      this.wake?.();
    };
    socket.on('error', fail);
    socket.on('close', () => fail(new Error('connection closed')));
  }

  static async session<T>(path: string, timeoutMs: number, body: (q: Qmp) => Promise<T>): Promise<T> {
    const q = new Qmp(createConnection(path), Date.now() + timeoutMs);
    try {
      await q.take((m) => 'QMP' in m);
      const caps = await q.execute('qmp_capabilities');
      if (!caps.ok) throw new Error(caps.error);
      return await body(q);
    } catch (e) {
      throw isDriverError(e) ? e : internal(`QMP at ${path}: ${describe(e)}`, e);
    } finally {
      q.socket.destroy();
    }
  }

  /** Runs a command; a QMP error comes back as { ok: false }, a lost connection or timeout throws. */
  async execute(command: string, args?: Record<string, QmpValue>): Promise<QmpReply> {
    const id = ++this.lastId;
    // Sizes go out as exact JSON integers: QMP takes int64, JSON.stringify knows no bigint.
    const text = JSON.stringify({ execute: command, id, ...(args && { arguments: args }) }, (_k, v: unknown) =>
      typeof v === 'bigint' ? `${BIG}${v}` : v,
    ).replace(new RegExp(`"${BIG}(\\d+)"`, 'g'), '$1');
    this.socket.write(`${text}\n`);
    const m = await this.take((msg) => msg['id'] === id);
    if ('error' in m) return { ok: false, error: (m['error'] as { desc?: string }).desc ?? JSON.stringify(m['error']) };
    return { ok: true, value: m['return'] };
  }

  /** Waits up to `ms` for an event; false if it does not come. */
  async event(name: string, ms: number): Promise<boolean> {
    return this.take((m) => m['event'] === name, Math.min(this.deadline, Date.now() + ms)).then(
      () => true,
      () => false,
    );
  }

  private async take(match: (m: QmpMessage) => boolean, deadline = this.deadline): Promise<QmpMessage> {
    for (;;) {
      const i = this.inbox.findIndex(match);
      if (i >= 0) return this.inbox.splice(i, 1)[0] as QmpMessage;
      if (this.failure !== undefined) throw this.failure;
      const left = deadline - Date.now();
      if (left <= 0) throw new Error('timed out waiting for an answer');
      await new Promise<void>((res) => {
        const timer = setTimeout(res, left);
        this.wake = () => {
          clearTimeout(timer);
          res();
        };
      });
      this.wake = undefined;
    }
  }
}
