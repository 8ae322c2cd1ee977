// refresh_token is oidc-provider's own handler (rotation, reuse detection), re-registered behind
// a wrapper that runs requests presenting the same refresh token one after another.
//
// Why: the handler checks "already consumed" and marks the token consumed with awaits in between.
// A database-backed provider makes that atomic. Here it only holds because every await on that
// path happens to settle without I/O (in-memory storage); the queue makes it hold by
// construction, so the tests can rely on it: of concurrent requests presenting one refresh token
// the first rotates it and every other one is a reuse (invalid_grant, chain revoked).
//
// Like client_credentials.js this imports oidc-provider internals; the version is pinned.

import * as builtIn from 'oidc-provider/lib/actions/grants/refresh_token.js';
import * as grantHelpers from 'oidc-provider/lib/helpers/grants.js';

export function registerRefreshToken(provider) {
  const helpers = Object.fromEntries(
    Object.entries(grantHelpers).map(([name, helper]) => [name, helper.bind(undefined, provider)]),
  );
  const queues = new Map(); // refresh token value -> tail of its promise chain

  async function handler(ctx) {
    const key = ctx.oidc.params.refresh_token;
    if (typeof key !== 'string' || !key) return builtIn.handler(provider, helpers, ctx);

    const previous = queues.get(key) ?? Promise.resolve();
    const run = previous.then(() => builtIn.handler(provider, helpers, ctx));
    const tail = run.catch(() => {});
    queues.set(key, tail);
    try {
      return await run;
    } finally {
      if (queues.get(key) === tail) queues.delete(key);
    }
  }

  // Same parameters oidc-provider registers for it with resource indicators enabled.
  provider.registerGrantType(builtIn.grantType, handler, [...builtIn.parameters, 'resource'], ['resource']);
}
