// Resource Owner Password Credentials grant (RFC 6749 §4.3), which oidc-provider deliberately
// does not ship. Tokens are minted through the provider's own models (Grant, AccessToken,
// RefreshToken, IdToken) exactly the way its authorization_code grant does, so the built-in
// refresh_token grant, introspection and revocation treat them like any other token.

import { timingSafeEqual, createHash } from 'node:crypto';

import { invalidGrant, requireParam, resolveScope, tokenResponse } from './common.js';

export const GRANT_TYPE = 'password';

// Hash both sides first so the comparison takes the same time whatever the lengths.
function samePassword(given, expected) {
  const digest = (value) => createHash('sha256').update(value).digest();
  return timingSafeEqual(digest(given), digest(expected));
}

export function registerPasswordGrant(provider, {
  users, supportedScopes, issueRefreshToken, findAccount,
}) {
  async function handler(ctx) {
    const { client } = ctx.oidc;
    const username = requireParam(ctx, 'username');
    const password = requireParam(ctx, 'password');

    const expected = users.get(username);
    // Compare even for an unknown user, so both failures look and take the same.
    const matches = samePassword(password, expected ?? '');
    if (expected === undefined || !matches) {
      throw invalidGrant('invalid resource owner credentials');
    }

    const scope = resolveScope(ctx, supportedScopes);
    const scopes = new Set(scope.split(' ').filter(Boolean));
    const account = await findAccount(ctx, username);
    ctx.oidc.entity('Account', account);

    // The Grant records what was authorized; refresh_token exchanges re-derive the access token
    // scope from it, so it must hold every issued scope.
    const grant = new provider.Grant({ accountId: username, clientId: client.clientId });
    if (scope) grant.addOIDCScope(scope);
    const grantId = await grant.save();
    ctx.oidc.entity('Grant', grant);

    const authTime = Math.floor(Date.now() / 1000);
    const at = new provider.AccessToken({
      accountId: username,
      client,
      grantId,
      gty: GRANT_TYPE,
      scope: scope || undefined,
    });
    ctx.oidc.entity('AccessToken', at);
    const accessToken = await at.save();

    let refreshToken;
    if (await issueRefreshToken(ctx, client, at)) {
      const rt = new provider.RefreshToken({
        accountId: username,
        amr: ['pwd'],
        authTime,
        client,
        grantId,
        gty: GRANT_TYPE,
        rotations: 0,
        scope: scope || undefined,
      });
      ctx.oidc.entity('RefreshToken', rt);
      refreshToken = await rt.save();
    }

    let idToken;
    if (scopes.has('openid')) {
      const claims = await account.claims('id_token', scope, {}, []);
      const token = new provider.IdToken({ ...claims, sub: username }, { ctx });
      token.scope = scope;
      token.set('auth_time', authTime);
      token.set('amr', ['pwd']);
      idToken = await token.issue({ use: 'idtoken' });
    }

    ctx.body = tokenResponse({
      access_token: accessToken,
      expires_in: at.expiration,
      token_type: at.tokenType,
      scope,
      refresh_token: refreshToken,
      id_token: idToken,
    });
  }

  // Only these reach ctx.oidc.params; any other parameter (e.g. a vendor extension such as
  // takeExclusiveSignOnControl=true) is accepted and ignored, as RFC 6749 §3.2 requires, and
  // still shows up in /test/stats last_params.
  provider.registerGrantType(GRANT_TYPE, handler, ['username', 'password', 'scope']);
}
