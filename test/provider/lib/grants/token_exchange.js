// Token exchange grant (RFC 8693 §2): a client trades a subject token for an access token with
// the audience and scope it asks for, issued for the subject token's subject. Checked here:
//  - subject_token must be an active access token this provider issued (any client's, by any
//    grant), with subject_token_type urn:ietf:params:oauth:token-type:access_token; the same
//    holds for actor_token when one is sent;
//  - audience (at most one value) must be an absolute http(s) URI or a registered client_id
//    (otherwise invalid_target); it becomes the token's `aud` in introspection;
//  - scope follows the common rules (the client's registered scope) and may not go beyond the
//    subject token's own scope (invalid_scope): an exchange narrows, it never widens;
//  - requested_token_type, when sent, must be the access token type.
// The issued token's subject (`sub`) is the subject token's account, or, for a client_credentials
// subject token, that client's id. No refresh token is issued.

import { errors } from 'oidc-provider';

import { invalidGrant, requireParam, resolveScope, tokenResponse } from './common.js';

export const GRANT_TYPE = 'urn:ietf:params:oauth:grant-type:token-exchange';
const ACCESS_TOKEN_TYPE = 'urn:ietf:params:oauth:token-type:access_token';

// The active access token `value` names (either kind this provider issues), or an error.
async function activeAccessToken(provider, value, type, which) {
  if (type !== ACCESS_TOKEN_TYPE) {
    throw new errors.InvalidRequest(`${which}_token_type must be ${ACCESS_TOKEN_TYPE}`);
  }
  const token = await provider.AccessToken.find(value) ?? await provider.ClientCredentials.find(value);
  if (!token?.isValid) throw invalidGrant(`${which}_token is not an active access token of this provider`);
  if (token.grantId) {
    const grant = await provider.Grant.find(token.grantId);
    if (!grant) throw invalidGrant(`${which}_token is not an active access token of this provider`);
  }
  return token;
}

async function checkAudience(provider, audience) {
  if (audience === undefined) return;
  if (typeof audience !== 'string' || !audience) throw new errors.InvalidTarget('only a single audience value is supported');
  if (/^https?:\/\/[^/\s]+/.test(audience)) return;
  if (await provider.Client.find(audience)) return;
  throw new errors.InvalidTarget('audience is neither an absolute http(s) URI nor a registered client');
}

export function registerTokenExchangeGrant(provider, { supportedScopes }) {
  async function handler(ctx) {
    const { client, params } = ctx.oidc;
    const subject = await activeAccessToken(provider, requireParam(ctx, 'subject_token'), requireParam(ctx, 'subject_token_type'), 'subject');
    if (params.actor_token !== undefined) {
      await activeAccessToken(provider, requireParam(ctx, 'actor_token'), requireParam(ctx, 'actor_token_type'), 'actor');
    }
    if (params.requested_token_type !== undefined && params.requested_token_type !== ACCESS_TOKEN_TYPE) {
      throw new errors.InvalidRequest(`requested_token_type must be ${ACCESS_TOKEN_TYPE}`);
    }
    await checkAudience(provider, params.audience);

    const scope = resolveScope(ctx, supportedScopes);
    const held = new Set((subject.scope || '').split(' ').filter(Boolean));
    const wider = scope.split(' ').filter((s) => s && !held.has(s));
    if (wider.length) throw new errors.InvalidScope('requested scope goes beyond the subject token\'s scope', wider.join(' '));

    const accountId = subject.accountId ?? subject.clientId;
    const grant = new provider.Grant({ accountId, clientId: client.clientId });
    if (scope) grant.addOIDCScope(scope);
    const grantId = await grant.save();
    ctx.oidc.entity('Grant', grant);

    const at = new provider.AccessToken({
      accountId, client, grantId, gty: GRANT_TYPE, scope: scope || undefined,
    });
    if (params.audience) at.setAudience(params.audience);
    ctx.oidc.entity('AccessToken', at);
    const accessToken = await at.save();

    ctx.body = tokenResponse({
      access_token: accessToken,
      issued_token_type: ACCESS_TOKEN_TYPE,
      expires_in: at.expiration,
      token_type: at.tokenType,
      scope,
    });
  }

  provider.registerGrantType(GRANT_TYPE, handler, [
    'subject_token', 'subject_token_type', 'actor_token', 'actor_token_type', 'requested_token_type', 'audience', 'scope',
  ]);
}
