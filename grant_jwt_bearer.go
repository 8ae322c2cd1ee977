package oauth

import (
	"context"
	"time"

	"github.com/oauth-broker/vault-plugin-secrets-oauth/internal/oauthclient"
)

// jwtBearerFlow is RFC 7523 §2.1: a JWT signed with a key held in Vault is the grant.
var jwtBearerFlow = grantFlow{
	validate: func(r *roleEntry, cfg *configEntry) error {
		if r.AssertionKey == "" {
			return fieldErrorf("assertion_key", "the jwt_bearer grant needs a key to sign the assertion")
		}
		if err := validateLength("assertion_key", r.AssertionKey, maxPEMBytes); err != nil {
			return err
		}
		if _, err := parseKeyField("assertion_key", "assertion_alg", r.AssertionKey, r.AssertionAlg, r.AssertionKID, false); err != nil {
			return err
		}
		if r.AssertionTTL <= 0 || r.AssertionTTL > maxAssertionTTL {
			return fieldErrorf("assertion_ttl", "must be more than 0 and at most %s", maxAssertionTTL)
		}
		if r.AssertionIssuer == "" && r.effectiveCredentials(cfg).ClientID == "" {
			return fieldErrorf("assertion_issuer", "set assertion_issuer or a client_id to use as the assertion's iss")
		}
		return nil
	},
	request: func(ctx context.Context, g *grantRequest) (*oauthclient.Token, error) {
		assertion, err := signAssertion(g.role, g.req, g.now)
		if err != nil {
			return nil, err
		}
		g.req.GrantType = oauthclient.GrantJWTBearer
		g.req.Params.Set("assertion", assertion)
		return g.client.Exchange(ctx, g.req)
	},
}

// signAssertion builds the assertion: iss and sub default to the client ID and aud to the token
// endpoint.
func signAssertion(role *roleEntry, req oauthclient.TokenRequest, now time.Time) (string, error) {
	key, err := parseKeyField("assertion_key", "assertion_alg", role.AssertionKey, role.AssertionAlg, role.AssertionKID, false)
	if err != nil {
		return "", err
	}
	claims := oauthclient.Claims{
		Issuer:   firstNonEmpty(role.AssertionIssuer, req.Auth.ClientID),
		Subject:  firstNonEmpty(role.AssertionSubject, req.Auth.ClientID),
		Audience: firstNonEmpty(role.AssertionAudience, req.TokenURL),
		TTL:      role.AssertionTTL,
		Extra:    role.AssertionClaims,
	}
	return key.SignJWT(claims, now)
}
