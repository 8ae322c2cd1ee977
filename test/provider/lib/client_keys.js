// Client keys fetched from a client's jwks_uri (private_key_jwt with keys held by Vault): the
// fetch oidc-provider uses for them, counted, and /test routes that expose the count and let a
// test end a client's JWKS cache as its max-age would.

// oidc-provider's fetch refuses loopback addresses (SSRF protection); in the tests, Vault's
// jwks_uri is on loopback, so fetches go out without that dispatcher.
export function createClientKeys(provider) {
  const fetches = {};

  async function fetch(url, options) {
    const { dispatcher, ...rest } = options;
    fetches[url] = (fetches[url] || 0) + 1;
    return globalThis.fetch(url, rest);
  }

  async function testRoutes(ctx, next) {
    if (ctx.method === 'GET' && ctx.path === '/test/jwks-fetches') {
      ctx.body = { fetches };
      return;
    }
    const stale = /^\/test\/clients\/([^/]+)\/jwks-stale$/.exec(ctx.path);
    if (ctx.method === 'POST' && stale) {
      const client = await provider.Client.find(decodeURIComponent(stale[1]));
      if (!client) {
        ctx.status = 404;
        ctx.body = { error: 'unknown client' };
        return;
      }
      client.asymmetricKeyStore.freshUntil = 0;
      ctx.status = 204;
      return;
    }
    await next();
  }

  return { fetch, testRoutes };
}
