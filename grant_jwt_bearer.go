package oauth

import (
	"context"
	"time"

	"github.com/oauth-broker/vault-plugin-secrets-oauth/internal/oauthclient"
)

// jwtBearerFlow is RFC 7523 §2.1: a JWT signed with a key held in Vault is the grant.
var jwtBearerFlow = grantFlow{
	validate: func(r *roleEntry, cfg *configEntry) error {
		switch {
		case r.AssertionKey != "" && r.AssertionKeyName != "":
			return fieldErrorf("assertion_key_name", "and assertion_key both give the key that signs the assertion; set one of them (write the other as \"\")")
		case r.AssertionKeyName != "":
			if r.AssertionAlg != "" || r.AssertionKID != "" {
				return fieldErrorf("assertion_key_name", "names a mount key, which has its own alg and kid: assertion_alg and assertion_kid apply only to assertion_key")
			}
		case r.AssertionKey == "":
			return fieldErrorf("assertion_key", "the jwt_bearer grant needs a key to sign the assertion (or assertion_key_name, a mount key)")
		default:
			if err := validateLength("assertion_key", r.AssertionKey, maxPEMBytes); err != nil {
				return err
			}
			if _, err := parseKeyField("assertion_key", "assertion_alg", r.AssertionKey, r.AssertionAlg, r.AssertionKID, false); err != nil {
				return err
			}
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
		key, err := assertionKey(g)
		if err != nil {
			return nil, err
		}
		assertion, err := signAssertion(key, g.role, g.req, g.now)
		if err != nil {
			return nil, err
		}
		g.req.GrantType = oauthclient.GrantJWTBearer
		g.req.Params.Set("assertion", assertion)
		return g.client.Exchange(ctx, g.req)
	},
}

// assertionKey is the key that signs the role's assertions: a mount key's current one, or the
// pasted assertion_key.
func assertionKey(g *grantRequest) (*oauthclient.SigningKey, error) {
	if name := g.role.AssertionKeyName; name != "" {
		return g.mountKey("assertion_key_name", name)
	}
	return parseKeyField("assertion_key", "assertion_alg", g.role.AssertionKey, g.role.AssertionAlg, g.role.AssertionKID, false)
}

// signAssertion builds the assertion: iss and sub default to the client ID and aud to the token
// endpoint.
func signAssertion(key *oauthclient.SigningKey, role *roleEntry, req oauthclient.TokenRequest, now time.Time) (string, error) {
	claims := oauthclient.Claims{
		Issuer:   firstNonEmpty(role.AssertionIssuer, req.Auth.ClientID),
		Subject:  firstNonEmpty(role.AssertionSubject, req.Auth.ClientID),
		Audience: firstNonEmpty(role.AssertionAudience, req.TokenURL),
		TTL:      role.AssertionTTL,
		Extra:    role.AssertionClaims,
	}
	return key.SignJWT(claims, now)
}
