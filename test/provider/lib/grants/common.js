// Pieces shared by the custom grants (password, jwt-bearer) and the client_credentials wrapper.

import { errors } from 'oidc-provider';

// oidc-provider's InvalidGrant always answers the generic "grant request is invalid"; tests and
// the plugin's logs are far easier to read with the actual reason, which RFC 6749 §5.2 allows.
export function invalidGrant(description) {
  const err = new errors.InvalidGrant();
  err.error_description = description;
  err.error_detail = description;
  return err;
}

export function requireParam(ctx, name) {
  const value = ctx.oidc.params[name];
  if (typeof value !== 'string' || value === '') {
    throw new errors.InvalidRequest(`missing required parameter '${name}'`);
  }
  return value;
}

// The scope a token is issued with, following the rules oidc-provider applies to
// client_credentials so every grant behaves alike:
//  - values the server does not support are dropped (RFC 6749 §3.3 lets the server ignore them);
//  - a supported value outside the client's registered `scope` is invalid_scope;
//  - no `scope` parameter means the client's registered scope (the "pre-defined default" of §3.3).
export function resolveScope(ctx, supportedScopes) {
  const { client, params } = ctx.oidc;
  const registered = client.scope ? client.scope.split(' ') : undefined;
  if (params.scope === undefined) return registered ? registered.join(' ') : '';

  const requested = [...new Set(params.scope.split(' ').filter(Boolean))];
  const allowed = registered ? new Set(registered) : undefined;
  for (const value of requested) {
    if (supportedScopes.has(value) && allowed && !allowed.has(value)) {
      throw new errors.InvalidScope('requested scope is not allowed', value);
    }
  }
  return requested.filter((value) => supportedScopes.has(value)).join(' ');
}

// Token response per RFC 6749 §5.1; members without a value are left out.
export function tokenResponse(fields) {
  return Object.fromEntries(Object.entries(fields).filter(([, value]) => value !== undefined && value !== ''));
}
