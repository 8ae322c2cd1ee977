package oauth

import (
	"context"
	"slices"
	"strings"

	"github.com/oauth-broker/vault-plugin-secrets-oauth/internal/oauthclient"
)

// authorizationCodeFlow is RFC 6749 §4.1 with PKCE (RFC 7636): a person authorizes the role
// once through authorize/<name> and callback; from then on the role lives on the refresh token
// that exchange gave, exactly as a refresh_token role does.
var authorizationCodeFlow = grantFlow{
	validate: func(r *roleEntry, cfg *configEntry) error {
		if r.RedirectURI == "" && (cfg == nil || cfg.RedirectURI == "") {
			return fieldErrorf("redirect_uri", "the authorization_code grant needs the redirect URI registered at the provider (on the role, or as the config's default)")
		}
		// Metadata without the list promises query and fragment only (RFC 8414 §2), but
		// providers that do post forms often leave it out: refuse only on the list's word.
		if r.responseMode() != responseModeFormPost || cfg == nil {
			return nil
		}
		if supported := cfg.discovered().ResponseModesSupported; len(supported) > 0 && !slices.Contains(supported, responseModeFormPost) {
			return fieldErrorf("response_mode", "the provider's metadata lists response_modes_supported %s, without %s: use %s", strings.Join(supported, ", "), responseModeFormPost, responseModeQuery)
		}
		return nil
	},
	request:   delegatedRequest("authorize"),
	startPath: "authorize",
}

// reservedAuthParams are set by the plugin itself; auth_params may not override them.
var reservedAuthParams = []string{"response_type", "response_mode", "client_id", "redirect_uri", "scope", "state", "code_challenge", "code_challenge_method", "nonce"}

// How the provider hands the browser's authorization response to the redirect URI: in its query
// (RFC 6749 §4.1.2), or as a form the browser posts (OAuth 2.0 Form Post Response Mode), which
// keeps the code and state out of URLs and so out of the request_uri of Vault's audit log.
const (
	responseModeQuery    = "query"
	responseModeFormPost = "form_post"
)

var responseModes = []string{responseModeQuery, responseModeFormPost}

// responseMode is the role's response mode, query when it sets none.
func (r *roleEntry) responseMode() string { return firstNonEmpty(r.ResponseMode, responseModeQuery) }

// delegatedRequest is the token request of a grant a person authorized: a refresh with the
// token the authorization left, or, before there is one, an error that says what to run.
func delegatedRequest(startPath string) func(ctx context.Context, g *grantRequest) (*oauthclient.Token, error) {
	return func(ctx context.Context, g *grantRequest) (*oauthclient.Token, error) {
		if g.refreshToken == "" {
			// Stranded (issued to another client or provider) counts as none: a person must
			// authorize again, unless the config change is undone.
			return nil, &notAuthorizedError{name: g.name, startPath: startPath}
		}
		return refreshChain(ctx, g, g.refreshToken, "authorize the role again with vault write -force <mount>/"+startPath+"/"+g.name)
	}
}
