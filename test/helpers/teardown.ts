/**
 * Suites declare what their set-up makes (in beforeAll, or the conformance Env's open()) as
 * `let x: T`, but when the set-up fails half-way (no root, a mount or a start that fails) the
 * teardown still runs and finds the rest undefined. `ifMade(x)?.stop()` says so in the type,
 * where a bare `x?.stop()` looks needless to the type checker.
 */
export function ifMade<T>(made: T): T | undefined {
  return made;
}
