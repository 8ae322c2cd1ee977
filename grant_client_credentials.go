package oauth

import (
	"context"

	"github.com/oauth-broker/vault-plugin-secrets-oauth/internal/oauthclient"
)

// clientCredentialsFlow is RFC 6749 §4.4: the client asks for a token of its own, with nothing
// but its authentication.
var clientCredentialsFlow = grantFlow{
	validate: func(*roleEntry, *configEntry) error { return nil },
	request: func(ctx context.Context, g *grantRequest) (*oauthclient.Token, error) {
		g.req.GrantType = oauthclient.GrantClientCredentials
		return g.client.Exchange(ctx, g.req)
	},
}
