// client_credentials is oidc-provider's own handler, re-registered behind a thin wrapper so that
// a request without `scope` gets the client's registered scope (RFC 6749 §3.3 "pre-defined
// default value"); unwrapped, oidc-provider would issue a token with no scope at all.
//
// The handler and its helpers are not part of oidc-provider's documented API; they are imported
// from its lib/ folder, which is safe only because package.json pins the exact version.

import * as builtIn from 'oidc-provider/lib/actions/grants/client_credentials.js';
import * as grantHelpers from 'oidc-provider/lib/helpers/grants.js';

export function registerClientCredentials(provider) {
  const helpers = Object.fromEntries(
    Object.entries(grantHelpers).map(([name, helper]) => [name, helper.bind(undefined, provider)]),
  );

  async function handler(ctx) {
    const { client, params } = ctx.oidc;
    if (params.scope === undefined && client.scope) params.scope = client.scope;
    await builtIn.handler(provider, helpers, ctx);
  }

  // Same parameters oidc-provider registers when resource indicators are enabled; `resource` may
  // repeat on the wire and is then rejected by the handler with invalid_target as RFC 8707 says.
  provider.registerGrantType(builtIn.grantType, handler, [...builtIn.parameters, 'resource'], ['resource']);
}
