package oauth

import (
	"cmp"
	"context"
	"fmt"
	"net/url"

	"github.com/oauth-broker/vault-plugin-secrets-oauth/internal/oauthclient"
)

// refreshTokenFlow is RFC 6749 §6 with an imported refresh token: each grant sends the newest
// refresh token of the chain, which the provider may rotate.
var refreshTokenFlow = grantFlow{
	validate: func(r *roleEntry, _ *configEntry) error {
		if r.RefreshToken == "" {
			return fieldErrorf("refresh_token", "the refresh_token grant needs a refresh token to import")
		}
		return nil
	},
	request: func(ctx context.Context, g *grantRequest) (*oauthclient.Token, error) {
		if g.stranded {
			return nil, errStrandedRefreshToken
		}
		return refreshChain(ctx, g, cmp.Or(g.refreshToken, g.role.RefreshToken), "import a new one with vault write <mount>/roles/<name> refresh_token=@file")
	},
}

// refreshChain sends the newest refresh token of the role's chain; remedy says what to do when
// the provider no longer accepts it.
func refreshChain(ctx context.Context, g *grantRequest, refreshToken, remedy string) (*oauthclient.Token, error) {
	tok, err := g.client.Exchange(ctx, withRefreshToken(g.req, refreshToken))
	if isInvalidGrant(err) {
		return nil, fmt.Errorf("%w; the refresh token is no longer accepted: %s", err, remedy)
	}
	return tok, err
}

// withRefreshToken turns req into a refresh request (RFC 6749 §6), leaving req's parameters as
// they were.
func withRefreshToken(req oauthclient.TokenRequest, refreshToken string) oauthclient.TokenRequest {
	params := url.Values{}
	for k, v := range req.Params {
		params[k] = v
	}
	params.Set("refresh_token", refreshToken)
	req.Params = params
	req.GrantType = oauthclient.GrantRefreshToken
	return req
}
