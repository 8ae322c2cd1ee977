package oauth

import (
	"context"
	"crypto/tls"
	"net/http"
	"net/url"
	"strings"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"
	"github.com/oauth-broker/vault-plugin-secrets-oauth/internal/oauth1"
	"github.com/oauth-broker/vault-plugin-secrets-oauth/internal/oauthclient"
)

// OAuth 1.0a's three-legged flow (RFC 5849 §2), on the paths of the authorization code flow:
// authorize/<name> obtains temporary credentials with oauth_callback set to the role's redirect
// URI and answers the URL where the person authorizes them; the callback (browser or pasted)
// brings oauth_token and oauth_verifier, which are exchanged for the token credentials. The
// temporary credentials' identifier stands for the state: found by its digest, used once.

// oob is §2.1's callback for a client that cannot receive one: the person pastes the verifier.
const oob = "oob"

// authorizeOAuth1 starts the flow of an oauth1 role.
func (b *backend) authorizeOAuth1(ctx context.Context, s logical.Storage, target *roleTarget) (*logical.Response, error) {
	name, role, cfg := target.name, target.role, target.cfg
	if !role.threeLegged() {
		return errorResponse(fieldErrorf("request_token_url", "role %q has no three-legged flow: set request_token_url, authorize_url and access_token_url (or import token and token_secret)", name))
	}
	callback := firstNonEmpty(role.RedirectURI, oob)
	if cfg != nil {
		callback = firstNonEmpty(role.RedirectURI, cfg.RedirectURI, oob)
	}
	creds, err := role.consumerCredentials()
	if err != nil {
		return errorResponse(err)
	}
	hc, err := b.oauth1HTTPClient(cfg)
	if err != nil {
		return nil, err
	}
	token, secret, answer, err := oauth1.Obtain(ctx, hc, role.RequestTokenURL, creds, []oauth1.Param{{Name: "oauth_callback", Value: callback}}, b.now())
	if err != nil {
		return logical.ErrorResponse("requesting temporary credentials for role %q failed: %v", name, err), nil
	}
	if answer.Get("oauth_callback_confirmed") != "true" {
		// §2.1: the server MUST confirm the callback; one that does not speaks OAuth 1.0, whose
		// flow is open to session fixation.
		return logical.ErrorResponse("the temporary credentials for role %q came without oauth_callback_confirmed=true (an OAuth 1.0 server, not 1.0a): not used", name), nil
	}
	id, err := randomID()
	if err != nil {
		return nil, err
	}
	p := &pendingAuthorization{
		ID: id, Kind: kindOAuth1, Incarnation: role.Incarnation, ExpiresAt: b.now().Add(authorizeTTL),
		StateDigest: digest(token), RedirectURI: callback, TemporarySecret: secret,
	}
	if err := b.startPending(ctx, s, name, role, p); err != nil {
		return errorResponse(err)
	}
	u, err := url.Parse(role.AuthorizeURL)
	if err != nil {
		return nil, err
	}
	q := u.Query()
	q.Set("oauth_token", token)
	u.RawQuery = q.Encode()
	return &logical.Response{Data: map[string]any{"auth_url": u.String(), "expires_at": rfc3339(p.ExpiresAt)}}, nil
}

// completeOAuth1 exchanges the authorized temporary credentials for the token credentials and
// stores them on the role.
func (b *backend) completeOAuth1(ctx context.Context, s logical.Storage, d *framework.FieldData) (string, *authorization, error) {
	temporary := d.Get("oauth_token").(string)
	if temporary == "" || len(temporary) > 512 {
		return "", nil, errUnknownState
	}
	name, p, err := b.consumeState(ctx, s, digest(temporary), kindOAuth1)
	if err != nil {
		return name, nil, err
	}
	verifier := d.Get("oauth_verifier").(string)
	if verifier == "" || len(verifier) > 1024 {
		return name, nil, badCallback("oauth_verifier is missing")
	}
	role, err := b.role(ctx, s, name)
	if err != nil {
		return name, nil, err
	}
	if role == nil || role.Incarnation != p.Incarnation || role.GrantType != grantOAuth1 || !role.threeLegged() {
		return name, nil, errStaleAuthorization
	}
	cfg, err := b.config(ctx, s)
	if err != nil {
		return name, nil, err
	}
	creds, err := role.consumerCredentials()
	if err != nil {
		return name, nil, err
	}
	creds.Token, creds.TokenSecret = temporary, p.TemporarySecret
	hc, err := b.oauth1HTTPClient(cfg)
	if err != nil {
		return name, nil, err
	}
	token, secret, _, err := oauth1.Obtain(ctx, hc, role.AccessTokenURL, creds, []oauth1.Param{{Name: "oauth_verifier", Value: verifier}}, b.now())
	if err != nil {
		return name, nil, badCallback("the provider refused the authorization of role %q: %v", name, err)
	}
	authz, err := b.storeOAuth1Token(ctx, s, name, role, token, secret)
	if err != nil {
		return name, nil, badCallback("%v", err)
	}
	return name, authz, nil
}

// storeOAuth1Token makes token and secret the role's, if the role is still the one that asked
// for them (its consumer, endpoints and token credentials unchanged: token credentials written
// to the role meanwhile stand).
func (b *backend) storeOAuth1Token(ctx context.Context, s logical.Storage, name string, asked *roleEntry, token, secret string) (*authorization, error) {
	role, unlock, err := b.lockRole(ctx, s, name)
	defer unlock()
	if err != nil {
		return nil, err
	}
	if role == nil || role.Incarnation != asked.Incarnation || role.GrantType != grantOAuth1 ||
		role.ConsumerKey != asked.ConsumerKey || role.AccessTokenURL != asked.AccessTokenURL ||
		role.Token != asked.Token || role.TokenSecret != asked.TokenSecret {
		return nil, errStaleAuthorization
	}
	role.Token, role.TokenSecret = token, secret
	authorized, err := b.storeAuthorization(ctx, s, name, role, "")
	if err != nil {
		return nil, err
	}
	return authorized.Authorization, nil
}

// consumerCredentials are the role's client credentials without a token.
func (r *roleEntry) consumerCredentials() (oauth1.Credentials, error) {
	c, err := r.credentials()
	c.Token, c.TokenSecret = "", ""
	return c, err
}

// oauth1HTTPClient sends the three-legged flow's requests with the config's trust roots and
// timeout when there is a config. It follows no redirect: a token endpoint that redirects is
// misconfigured, and following would resend the signed request elsewhere.
func (b *backend) oauth1HTTPClient(cfg *configEntry) (*http.Client, error) {
	transport := http.DefaultTransport.(*http.Transport).Clone()
	transport.TLSClientConfig = &tls.Config{MinVersion: tls.VersionTLS12}
	transport.DisableKeepAlives = true // two requests per authorization: nothing to keep
	timeout := defaultTimeout
	if cfg != nil {
		timeout = cfg.Timeout
		if strings.TrimSpace(cfg.CAPEM) != "" {
			pool, err := oauthclient.ParseCAPEM(cfg.CAPEM)
			if err != nil {
				return nil, err
			}
			transport.TLSClientConfig.RootCAs = pool
		}
	}
	return &http.Client{
		Timeout:       timeout,
		Transport:     transport,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}, nil
}
