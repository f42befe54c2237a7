/**
 * Sessions built on first use and kept: one per kind of graph (e.g. a decoder layer with or
 * without a KV cache, with or without a tap), shared by every layer of that kind.
 */
import { GraphSession, type RuntimeOptions } from './session.js';

export class SessionCache {
  private readonly sessions = new Map<string, Promise<GraphSession>>();

  constructor(private readonly runtime: RuntimeOptions) {}

  /** The session of `key`, created from `build()` the first time it is asked for. */
  get(key: string, build: () => Uint8Array): Promise<GraphSession> {
    let session = this.sessions.get(key);
    if (session === undefined) {
      session = GraphSession.create(build(), this.runtime);
      this.sessions.set(key, session);
    }
    return session;
  }

  async release(): Promise<void> {
    const all = [...this.sessions.values()];
    this.sessions.clear();
    for (const session of all) await (await session).release();
  }
}
