// Test OAuth 2.0 / OpenID Connect provider for the plugin's end-to-end tests.
//
// A real oidc-provider instance (discovery, dynamic client registration, client authentication,
// introspection, revocation, refresh token rotation) plus the grants it does not ship: password,
// RFC 7523 jwt-bearer and RFC 8693 token exchange. Test-only instrumentation lives under /test/. See README.md for the
// contract; this file only wires the pieces together.

import { randomBytes } from 'node:crypto';
import { renameSync, writeFileSync } from 'node:fs';
import * as http from 'node:http';
import * as https from 'node:https';

import * as jose from 'jose';
import Provider, { errors } from 'oidc-provider';

import MapAdapter from './lib/adapter.js';
import { createClientKeys } from './lib/client_keys.js';
import * as mtls from './lib/mtls.js';
import { dpopFeature } from './lib/dpop.js';
import { readEnv } from './lib/env.js';
import { registerClientCredentials } from './lib/grants/client_credentials.js';
import { registerJwtBearerGrant } from './lib/grants/jwt_bearer.js';
import { registerPasswordGrant } from './lib/grants/password.js';
import { registerRefreshToken } from './lib/grants/refresh_token.js';
import { registerTokenExchangeGrant } from './lib/grants/token_exchange.js';
import { createInteractions, deviceFlowPages } from './lib/interactions.js';
import { createTesting } from './lib/testing.js';

const INTROSPECTOR = 'introspector';
// oidc-provider's wording when a client uses a grant type it did not register.
const GRANT_NOT_ALLOWED = 'requested grant type is not allowed for this client';
const CLIENT_AUTH_METHODS = ['client_secret_basic', 'client_secret_post', 'client_secret_jwt', 'private_key_jwt', 'none'];

function log(message) {
  process.stdout.write(`${new Date().toISOString()} ${message}\n`);
}

let env;
let tlsOptions;
try {
  env = readEnv();
  tlsOptions = mtls.serverOptions();
} catch (err) {
  process.stderr.write(`provider: ${err.message}\n`);
  process.exit(2);
}

// The issuer embeds the port, which is only known once bound (PORT=0), so bind first and build
// the provider afterwards; nothing can connect before LISTENING is printed anyway.
const server = tlsOptions ? https.createServer(tlsOptions) : http.createServer();
try {
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(env.port, '127.0.0.1', resolve);
  });
} catch (err) {
  process.stderr.write(`provider: cannot listen on 127.0.0.1:${env.port}: ${err.message}\n`);
  process.exit(1);
}
const { port } = server.address();
const issuer = `${tlsOptions ? 'https' : 'http'}://127.0.0.1:${port}`;

const supportedScopes = new Set([
  'openid', 'offline_access', 'profile', 'email', 'read', 'write', 'api', 'admin', ...env.extraScopes,
]);

// A fresh signing key per run: ID tokens only need to verify against this run's /jwks.
const { privateKey } = await jose.generateKeyPair('RS256', { extractable: true });
const signingKey = { ...await jose.exportJWK(privateKey), kid: `rs256-${port}`, alg: 'RS256', use: 'sig' };

// Accounts are the PROVIDER_USERS; password-grant tokens reference them by username.
async function findAccount(ctx, id) {
  if (!env.users.has(id)) return undefined;
  return {
    accountId: id,
    async claims() {
      return {
        sub: id,
        name: id,
        preferred_username: id,
        email: `${id}@example.test`,
        email_verified: true,
      };
    },
  };
}

// Refresh tokens go to every client registered with the refresh_token grant, regardless of
// offline_access: the plugin keeps refresh tokens alive, whichever grant issued them.
async function issueRefreshToken(ctx, client) {
  return client.grantTypeAllowed('refresh_token');
}

// Per-client lifetime first (access_token_ttl metadata), then the resource server's, then env.
function accessTokenTTL(ctx, token, client) {
  return client?.access_token_ttl ?? token.resourceServer?.accessTokenTTL ?? env.accessTokenTTL;
}

// Provider is needed to find clients; configuration.fetch is bound below once it exists.
let clientKeys;

const configuration = {
  adapter: MapAdapter,
  fetch: (url, options) => clientKeys.fetch(url, options),
  jwks: { keys: [signingKey] },
  // Signs the interaction and session cookies of the sign-in and consent pages (lib/interactions.js).
  cookies: { keys: [randomBytes(32).toString('base64url')] },
  clients: [
    {
      client_id: INTROSPECTOR,
      client_secret: env.introspectorSecret,
      token_endpoint_auth_method: 'client_secret_basic',
      grant_types: [],
      response_types: [],
      redirect_uris: [],
    },
  ],
  clientAuthMethods: CLIENT_AUTH_METHODS,
  // oidc-provider authenticates introspection and revocation callers exactly like token endpoint
  // callers but does not advertise it; RFC 8414 would otherwise imply client_secret_basic only.
  discovery: {
    introspection_endpoint_auth_methods_supported: CLIENT_AUTH_METHODS,
    revocation_endpoint_auth_methods_supported: CLIENT_AUTH_METHODS,
  },
  scopes: [...supportedScopes],
  claims: {
    openid: ['sub'],
    profile: ['name', 'preferred_username'],
    email: ['email', 'email_verified'],
  },
  // ID tokens from the token endpoint carry the profile/email claims their scope asks for.
  conformIdTokenClaims: false,
  findAccount,
  issueRefreshToken,
  // Tokens from the authorization code and device flows outlive the browser session that got them.
  expiresWithSession: async () => false,
  // PKCE (S256, the only method oidc-provider 9 knows) for every authorization request.
  pkce: { required: () => true },
  rotateRefreshToken: true,
  extraClientMetadata: {
    properties: ['access_token_ttl'],
    validator(ctx, key, value, metadata) {
      if (key !== 'access_token_ttl') return;
      if (value !== undefined && (!Number.isSafeInteger(value) || value <= 0)) {
        throw new errors.InvalidClientMetadata('access_token_ttl must be a positive integer (seconds)');
      }
      // Machine clients: a registration that names neither response_types nor redirect_uris and
      // no authorization_code grant would otherwise get the default response_types ["code"] and
      // be rejected for lacking redirect_uris. Registering {"grant_types":["client_credentials"]}
      // alone must work, so such clients get no response types (and so no redirect URIs).
      const rt = metadata.response_types;
      if (
        Array.isArray(rt) && rt.length === 1 && rt[0] === 'code'
        && !metadata.grant_types?.includes('authorization_code')
        && !metadata.redirect_uris?.length
      ) {
        metadata.response_types = [];
      }
    },
  },
  // Record a non-standard `audience` request parameter on the token, so introspection shows what
  // was asked for (RFC 8707 `resource` already becomes the token's `aud`).
  async extraTokenClaims(ctx) {
    const audience = ctx?.oidc?.body?.audience;
    if (audience === undefined) return undefined;
    return { requested_audience: audience };
  },
  ttl: {
    AccessToken: accessTokenTTL,
    ClientCredentials: accessTokenTTL,
    RefreshToken: env.refreshTokenTTL,
    // A grant must outlive the refresh tokens issued under it, or refreshing fails early.
    Grant: Math.max(env.refreshTokenTTL, 14 * 24 * 3600),
    IdToken: 3600,
    // The sign-in pages' artifacts: an authorization request has 10 minutes, like a device code.
    AuthorizationCode: 60,
    DeviceCode: 600,
    Interaction: 600,
    Session: 24 * 3600,
  },
  features: {
    // Sign-in and consent are lib/interactions.js, which checks PROVIDER_USERS' passwords.
    devInteractions: { enabled: false },
    deviceFlow: { enabled: true, ...deviceFlowPages },
    clientCredentials: { enabled: true },
    dPoP: dpopFeature(),
    introspection: {
      enabled: true,
      async allowedPolicy(ctx, client, token) {
        if (client.clientId === INTROSPECTOR) return true;
        // oidc-provider's default: a public client may only introspect its own tokens.
        return !(client.clientAuthMethod === 'none' && token.clientId !== client.clientId);
      },
    },
    revocation: {
      enabled: true,
      async allowedPolicy(ctx, client, token) {
        if (client.clientId === INTROSPECTOR) return true;
        // oidc-provider's default: clients revoke their own tokens only.
        if (token.clientId !== client.clientId) {
          if (client.clientAuthMethod === 'none') return false;
          throw new errors.InvalidRequest('client is not authorized to revoke the presented token');
        }
        return true;
      },
    },
    registration: { enabled: true, initialAccessToken: false },
    // Lets a test delete a client (DELETE /reg/:id with its registration_access_token).
    registrationManagement: { enabled: true, rotateRegistrationAccessToken: false },
    resourceIndicators: {
      enabled: true,
      // Any absolute URI is an acceptable resource; it becomes the token's audience and may
      // carry every supported scope (the client's registered scope still limits the request).
      async getResourceServerInfo() {
        return {
          scope: [...supportedScopes].filter((s) => s !== 'openid' && s !== 'offline_access').join(' '),
          accessTokenFormat: 'opaque',
        };
      },
      async useGrantedResource() {
        return true;
      },
    },
  },
};

if (tlsOptions) mtls.configure(configuration, issuer);
const provider = new Provider(issuer, configuration);
clientKeys = createClientKeys(provider);

registerClientCredentials(provider);
registerRefreshToken(provider);
registerPasswordGrant(provider, {
  users: env.users, supportedScopes, issueRefreshToken, findAccount,
});
registerJwtBearerGrant(provider, { supportedScopes });
registerTokenExchangeGrant(provider, { supportedScopes });

const testing = createTesting(provider, { tokenDelayMs: env.tokenDelayMs });

// One line per request; never parameters, headers or bodies, which carry secrets.
provider.use(async (ctx, next) => {
  const started = process.hrtime.bigint();
  try {
    await next();
  } finally {
    const ms = Number(process.hrtime.bigint() - started) / 1e6;
    let detail = '';
    if (ctx.body && typeof ctx.body === 'object' && typeof ctx.body.error === 'string') {
      detail = ` error=${ctx.body.error}`;
    }
    log(`${ctx.method} ${ctx.path} ${ctx.status} ${ms.toFixed(1)}ms${detail}`);
  }
});
// Before testing.testRoutes, which answers 404 to the /test routes it does not know.
provider.use(clientKeys.testRoutes);
provider.use(testing.testRoutes);
provider.use(createInteractions(provider, { users: env.users }));
provider.use(testing.tokenEndpoint);

provider.on('grant.error', (ctx, err) => {
  // Surface why a grant failed: oidc-provider's built-in grants answer a bare "grant request is
  // invalid" and keep the reason in error_detail.
  if (err.error === 'invalid_grant' && err.error_detail && ctx.body?.error === 'invalid_grant') {
    ctx.body.error_description = err.error_detail;
  }
  // RFC 6749 §5.2 names this case unauthorized_client; oidc-provider answers invalid_request.
  if (ctx.body?.error === 'invalid_request' && err.error_description === GRANT_NOT_ALLOWED) {
    ctx.body.error = 'unauthorized_client';
  }
  log(`grant.error grant_type=${ctx.oidc.params?.grant_type} client=${ctx.oidc.client?.clientId} `
    + `error=${err.error} detail=${err.error_detail ?? err.error_description ?? ''}`);
});
provider.on('server_error', (ctx, err) => {
  log(`server_error ${ctx.method} ${ctx.path}: ${err.stack || err}`);
});

server.on('request', provider.callback());

// Write-then-rename so a poller never reads a half-written URL.
if (env.urlFile) {
  writeFileSync(`${env.urlFile}.tmp`, `${issuer}\n`);
  renameSync(`${env.urlFile}.tmp`, env.urlFile);
}
process.stdout.write(`LISTENING ${issuer}\n`);

function shutdown(signal) {
  log(`${signal}: shutting down`);
  server.close(() => process.exit(0));
  // Keep-alive connections would hold close() open; tests want a prompt exit.
  server.closeAllConnections();
  setTimeout(() => process.exit(0), 2000).unref();
}
process.on('SIGTERM', () => shutdown('SIGTERM'));
process.on('SIGINT', () => shutdown('SIGINT'));
