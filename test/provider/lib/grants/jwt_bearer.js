// JWT Bearer Token grant (RFC 7523 §2.1): `assertion` is a JWT whose `iss` is a registered
// client_id. It is verified with that client's registered `jwks` (asymmetric algorithms) or its
// `client_secret` (HS*), and must carry aud (issuer or token endpoint), exp, iat, a fresh jti and
// sub. `sub` becomes the access token's subject. The requesting client authenticates on its own
// terms (its token_endpoint_auth_method, possibly `none`) before this handler runs.

import * as jose from 'jose';

import { invalidGrant, requireParam, resolveScope, tokenResponse } from './common.js';

export const GRANT_TYPE = 'urn:ietf:params:oauth:grant-type:jwt-bearer';

const SYMMETRIC = ['HS256', 'HS384', 'HS512'];
const ASYMMETRIC = [
  'RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512', 'ES256', 'ES384', 'ES512', 'EdDSA', 'Ed25519',
];
const CLOCK_TOLERANCE = 5; // seconds

function describeVerifyError(err) {
  if (err instanceof jose.errors.JWTExpired) return 'assertion has expired';
  if (err instanceof jose.errors.JWTClaimValidationFailed) {
    return `assertion claim check failed: ${err.message}`;
  }
  if (err instanceof jose.errors.JWSSignatureVerificationFailed) return 'assertion signature is invalid';
  if (err instanceof jose.errors.JWKSNoMatchingKey) return 'no registered key of the issuer matches the assertion';
  if (err instanceof jose.errors.JWKSMultipleMatchingKeys) return 'several registered keys match the assertion; add a kid';
  if (err instanceof jose.errors.JOSEAlgNotAllowed) return 'assertion algorithm is not allowed';
  if (err instanceof jose.errors.JWTInvalid || err instanceof jose.errors.JWSInvalid) {
    return `assertion is malformed: ${err.message}`;
  }
  return `assertion could not be verified: ${err.message}`;
}

export function registerJwtBearerGrant(provider, { supportedScopes }) {
  const audiences = [provider.issuer, provider.urlFor('token')];

  async function handler(ctx) {
    const { client } = ctx.oidc;
    const assertion = requireParam(ctx, 'assertion');

    // Read iss/alg unverified only to pick the verification key; nothing else is trusted yet.
    let header;
    let unverified;
    try {
      header = jose.decodeProtectedHeader(assertion);
      unverified = jose.decodeJwt(assertion);
    } catch {
      throw invalidGrant('assertion is not a JWS-signed JWT');
    }
    if (typeof unverified.iss !== 'string' || !unverified.iss) {
      throw invalidGrant('assertion "iss" claim is missing');
    }
    const issuer = await provider.Client.find(unverified.iss);
    if (!issuer) throw invalidGrant('assertion issuer is not a registered client');

    let key;
    let algorithms;
    if (SYMMETRIC.includes(header.alg)) {
      if (!issuer.clientSecret) throw invalidGrant('assertion issuer has no client_secret to verify HS* with');
      key = new TextEncoder().encode(issuer.clientSecret);
      algorithms = SYMMETRIC;
    } else if (ASYMMETRIC.includes(header.alg)) {
      if (!issuer.jwks?.keys?.length) throw invalidGrant('assertion issuer has no registered jwks');
      key = jose.createLocalJWKSet(issuer.jwks);
      algorithms = ASYMMETRIC;
    } else {
      throw invalidGrant(`assertion algorithm ${JSON.stringify(header.alg)} is not supported`);
    }

    let payload;
    try {
      ({ payload } = await jose.jwtVerify(assertion, key, {
        algorithms,
        issuer: issuer.clientId,
        audience: audiences,
        requiredClaims: ['exp', 'iat', 'jti', 'sub'],
        clockTolerance: CLOCK_TOLERANCE,
      }));
    } catch (err) {
      throw invalidGrant(describeVerifyError(err));
    }
    if (typeof payload.sub !== 'string' || !payload.sub) throw invalidGrant('assertion "sub" claim must be a non-empty string');
    if (typeof payload.jti !== 'string' || !payload.jti) throw invalidGrant('assertion "jti" claim must be a non-empty string');

    // Replay protection: remember (iss, jti) until the assertion would have expired anyway.
    const fresh = await provider.ReplayDetection.unique(
      issuer.clientId,
      payload.jti,
      payload.exp + CLOCK_TOLERANCE,
    );
    if (!fresh) throw invalidGrant('assertion "jti" has already been used');

    const scope = resolveScope(ctx, supportedScopes);
    const grant = new provider.Grant({ accountId: payload.sub, clientId: client.clientId });
    if (scope) grant.addOIDCScope(scope);
    const grantId = await grant.save();
    ctx.oidc.entity('Grant', grant);

    const at = new provider.AccessToken({
      accountId: payload.sub,
      client,
      grantId,
      gty: GRANT_TYPE,
      scope: scope || undefined,
    });
    ctx.oidc.entity('AccessToken', at);
    const accessToken = await at.save();

    // RFC 7523 §2.1 exchanges an assertion for an access token; no refresh token is issued, the
    // client presents a new assertion instead.
    ctx.body = tokenResponse({
      access_token: accessToken,
      expires_in: at.expiration,
      token_type: at.tokenType,
      scope,
    });
  }

  provider.registerGrantType(GRANT_TYPE, handler, ['assertion', 'scope']);
}
