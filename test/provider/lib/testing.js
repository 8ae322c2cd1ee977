// Test-only instrumentation: token endpoint counters, latency/fault injection, and the /test/*
// routes that expose them. Everything here sits in front of oidc-provider's own router as plain
// Koa middleware, so it sees every token request, including ones the provider rejects.

import * as querystring from 'node:querystring';

import { issuedTo, livePayloads } from './adapter.js';

// Values that are credentials, never echoed back through /test/stats.
const SECRET_PARAMS = new Set([
  'client_secret',
  'password',
  'assertion',
  'client_assertion',
  'refresh_token',
  'code',
  'code_verifier',
  'subject_token',
  'actor_token',
]);

const BODY_LIMIT = 64 * 1024;

function emptyStats() {
  return {
    token_requests: 0,
    by_grant: {},
    by_client: {},
    last_params: {},
    introspection_requests: 0,
    revocation_requests: 0,
  };
}

function bump(counter, key) {
  counter[key] = (counter[key] || 0) + 1;
}

// RFC 6749 error codes that match an injected status best.
function defaultFaultError(status) {
  if (status === 503) return 'temporarily_unavailable';
  if (status >= 500) return 'server_error';
  if (status === 401) return 'invalid_client';
  return 'invalid_request';
}

function httpError(status, message) {
  return Object.assign(new Error(message), { testStatus: status });
}

function isLoopback(address = '') {
  return address === '::1' || address.startsWith('127.') || address.startsWith('::ffff:127.');
}

function publicParams(body) {
  const out = {};
  for (const [name, value] of Object.entries(body || {})) {
    if (!SECRET_PARAMS.has(name)) out[name] = value;
  }
  return out;
}

// The client a token request speaks for, best effort even when authentication failed: the
// authenticated client, else whatever identifier the request carried.
function requestClientId(ctx, body) {
  let authenticated;
  try {
    authenticated = ctx.oidc?.client?.clientId;
  } catch {
    // ctx.oidc is only defined on routes oidc-provider matched.
  }
  if (authenticated) return authenticated;
  if (typeof body?.client_id === 'string') return body.client_id;
  const basic = /^basic (.+)$/i.exec(ctx.get('authorization'));
  if (basic) {
    const decoded = Buffer.from(basic[1], 'base64').toString();
    const colon = decoded.indexOf(':');
    if (colon > 0) {
      try {
        return decodeURIComponent(decoded.slice(0, colon).replace(/\+/g, ' '));
      } catch {
        return decoded.slice(0, colon);
      }
    }
  }
  return '(unknown)';
}

export async function readForm(ctx) {
  if (!ctx.is('application/x-www-form-urlencoded')) return {};
  const chunks = [];
  let size = 0;
  for await (const chunk of ctx.req) {
    size += chunk.length;
    if (size > BODY_LIMIT) return {};
    chunks.push(chunk);
  }
  return querystring.parse(Buffer.concat(chunks).toString());
}

async function readJson(ctx) {
  const chunks = [];
  let size = 0;
  for await (const chunk of ctx.req) {
    size += chunk.length;
    if (size > BODY_LIMIT) throw httpError(413, 'body too large');
    chunks.push(chunk);
  }
  const text = Buffer.concat(chunks).toString();
  if (!text) return {};
  try {
    return JSON.parse(text);
  } catch {
    throw httpError(400, 'body is not JSON');
  }
}

// How many of a client's refresh tokens are live and unused, and how many were spent by rotation
// (reuse of a spent one revokes its whole grant, and so removes both).
function refreshTokens(clientId) {
  if (typeof clientId !== 'string' || !clientId) throw httpError(400, 'client_id is required');
  const out = { active: 0, consumed: 0 };
  for (const token of livePayloads('RefreshToken')) {
    if (token.clientId === clientId) out[token.consumed ? 'consumed' : 'active'] += 1;
  }
  return out;
}

export function createTesting(provider, { tokenDelayMs }) {
  let stats = emptyStats();
  // PKCE verifiers the token endpoint received, by client, for GET /test/secrets.
  const verifiers = new Map();
  let inFlight = 0;
  let peakInFlight = 0;
  // Knobs the tests may turn at run time through POST /test/config.
  const knobs = {
    token_delay_ms: tokenDelayMs,
    // Fail the next `count` token requests with `status` before the provider sees them.
    fail_token_requests: { count: 0, status: 503, error: 'temporarily_unavailable' },
  };

  const tokenPath = new URL(provider.urlFor('token')).pathname;
  const introspectionPath = new URL(provider.urlFor('introspection')).pathname;
  const revocationPath = new URL(provider.urlFor('revocation')).pathname;

  function attribute(ctx, body) {
    const grantType = typeof body?.grant_type === 'string' ? body.grant_type : '(none)';
    const clientId = requestClientId(ctx, body);
    bump(stats.by_grant, grantType);
    bump(stats.by_client, clientId);
    if (typeof body?.code_verifier === 'string' && body.code_verifier) {
      if (!verifiers.has(clientId)) verifiers.set(clientId, new Set());
      verifiers.get(clientId).add(body.code_verifier);
    }
    stats.last_params[grantType] = publicParams(body);
  }

  async function injectedFailure(ctx) {
    const { status, error } = knobs.fail_token_requests;
    knobs.fail_token_requests.count -= 1;
    // The provider never parses this body, so read it here to attribute the request.
    attribute(ctx, await readForm(ctx));
    ctx.status = status;
    ctx.set('cache-control', 'no-store');
    ctx.body = { error, error_description: 'fault injected through /test/config' };
  }

  // Counts token requests from their first byte; the breakdowns need the parsed body, so they
  // are attributed once the provider is done with the request (before the response is sent).
  async function tokenEndpoint(ctx, next) {
    if (ctx.method === 'POST' && ctx.path === introspectionPath) stats.introspection_requests += 1;
    if (ctx.method === 'POST' && ctx.path === revocationPath) stats.revocation_requests += 1;
    if (ctx.method !== 'POST' || ctx.path !== tokenPath) return next();

    stats.token_requests += 1;
    inFlight += 1;
    peakInFlight = Math.max(peakInFlight, inFlight);
    try {
      if (knobs.token_delay_ms > 0) {
        await new Promise((resolve) => { setTimeout(resolve, knobs.token_delay_ms); });
      }
      if (knobs.fail_token_requests.count > 0) {
        await injectedFailure(ctx);
        return undefined;
      }
      try {
        await next();
      } finally {
        let body;
        try {
          body = ctx.oidc?.body;
        } catch {
          body = undefined;
        }
        attribute(ctx, body);
      }
    } finally {
      inFlight -= 1;
    }
    return undefined;
  }

  // Errors as {"error": "..."} JSON, like everything else the tests read.
  async function testRoutes(ctx, next) {
    if (!ctx.path.startsWith('/test/')) return next();
    try {
      await routeTest(ctx);
    } catch (err) {
      if (!err.testStatus) throw err;
      ctx.status = err.testStatus;
      ctx.body = { error: err.message };
    }
    return undefined;
  }

  function snapshot() {
    return { ...stats, in_flight: inFlight, peak_in_flight: peakInFlight };
  }

  function configure(update) {
    if (update === null || typeof update !== 'object' || Array.isArray(update)) {
      throw httpError(400, 'body must be a JSON object');
    }
    if ('token_delay_ms' in update) {
      const ms = update.token_delay_ms;
      if (!Number.isSafeInteger(ms) || ms < 0) throw httpError(400, 'token_delay_ms must be a non-negative integer');
      knobs.token_delay_ms = ms;
    }
    if ('fail_token_requests' in update) {
      const { count = 0, status = 503, error } = update.fail_token_requests || {};
      if (!Number.isSafeInteger(count) || count < 0) throw httpError(400, 'fail_token_requests.count must be a non-negative integer');
      if (!Number.isSafeInteger(status) || status < 400 || status > 599) throw httpError(400, 'fail_token_requests.status must be 4xx or 5xx');
      if (error !== undefined && (typeof error !== 'string' || !error)) throw httpError(400, 'fail_token_requests.error must be a non-empty string');
      knobs.fail_token_requests = { count, status, error: error || defaultFaultError(status) };
    }
  }

  // Every secret this provider issued to a client or received from it that a test cannot see
  // otherwise (the plugin keeps them), for the e2e leak scan. This one route reveals secrets.
  function secrets(clientId) {
    if (typeof clientId !== 'string' || !clientId) throw httpError(400, 'client_id is required');
    const byModel = issuedTo(clientId);
    return {
      access_token: byModel.AccessToken || [],
      refresh_token: byModel.RefreshToken || [],
      authorization_code: byModel.AuthorizationCode || [],
      device_code: byModel.DeviceCode || [],
      code_verifier: [...(verifiers.get(clientId) || [])],
    };
  }

  async function routeTest(ctx) {
    if (!isLoopback(ctx.req.socket.remoteAddress)) throw httpError(403, 'test endpoints are loopback-only');
    ctx.set('cache-control', 'no-store');

    const route = `${ctx.method} ${ctx.path}`;
    switch (route) {
      case 'GET /test/stats':
        ctx.body = snapshot();
        break;
      case 'POST /test/stats/reset':
        stats = emptyStats();
        // A gauge cannot be zeroed while requests are running; the peak restarts from "now".
        peakInFlight = inFlight;
        ctx.body = snapshot();
        break;
      case 'GET /test/refresh_tokens':
        ctx.body = refreshTokens(ctx.query.client_id);
        break;
      case 'GET /test/secrets':
        ctx.body = secrets(ctx.query.client_id);
        break;
      case 'GET /test/config':
        ctx.body = knobs;
        break;
      case 'POST /test/config':
        configure(await readJson(ctx));
        ctx.body = knobs;
        break;
      default:
        throw httpError(404, `no test route ${route}`);
    }
  }

  return { tokenEndpoint, testRoutes };
}
