package oauth

import (
	"context"

	"github.com/oauth-broker/vault-plugin-secrets-oauth/internal/oauthclient"
)

// passwordFlow is RFC 6749 §4.3: the resource owner's username and password. When the provider
// issued a refresh token, it is used first, and the password only when it is refused.
var passwordFlow = grantFlow{
	validate: func(r *roleEntry, _ *configEntry) error {
		if r.Username == "" {
			return fieldErrorf("username", "the password grant needs a username")
		}
		if r.Password == "" {
			return fieldErrorf("password", "the password grant needs a password")
		}
		return nil
	},
	request: func(ctx context.Context, g *grantRequest) (*oauthclient.Token, error) {
		if g.refreshToken != "" {
			tok, err := g.client.Exchange(ctx, withRefreshToken(g.req, g.refreshToken))
			if !isInvalidGrant(err) {
				return tok, err
			}
			// The refresh token expired or was revoked: sign in again with the password.
		}
		g.req.GrantType = oauthclient.GrantPassword
		g.req.Params.Set("username", g.role.Username)
		g.req.Params.Set("password", g.role.Password)
		return g.client.Exchange(ctx, g.req)
	},
}
