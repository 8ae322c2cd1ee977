package oauth

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"math"
	"net/url"
	"slices"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
	"github.com/oauth-broker/vault-plugin-secrets-oauth/internal/oauthclient"
)

// Grant types a role can perform, by the short names of its grant_type field. Each has a file
// of its own (grant_<name>.go) that defines its flow.
const (
	grantClientCredentials = "client_credentials"
	grantPassword          = "password"
	grantRefreshToken      = "refresh_token"
	grantJWTBearer         = "jwt_bearer"
	grantTokenExchange     = "token_exchange"
	grantAuthorizationCode = "authorization_code"
	grantDeviceCode        = "device_code"
	grantOAuth1            = "oauth1"
)

// supportedGrants lists them in the order the documentation does.
var supportedGrants = []string{grantClientCredentials, grantPassword, grantRefreshToken, grantJWTBearer, grantAuthorizationCode, grantDeviceCode, grantTokenExchange, grantOAuth1}

// grantFlow is one grant type: what its role needs and how it asks for a token.
type grantFlow struct {
	// validate checks the role's inputs for the grant; cfg is nil while there is no config.
	validate func(r *roleEntry, cfg *configEntry) error
	// request performs the token request.
	request func(ctx context.Context, g *grantRequest) (*oauthclient.Token, error)
	// startPath, for grants that need a person once, is the path that starts the person's part
	// ("authorize", "device"); until it completes, the role has nothing to refresh.
	startPath string
}

var grantFlows = map[string]grantFlow{
	grantClientCredentials: clientCredentialsFlow,
	grantPassword:          passwordFlow,
	grantRefreshToken:      refreshTokenFlow,
	grantJWTBearer:         jwtBearerFlow,
	grantTokenExchange:     tokenExchangeFlow,
	grantAuthorizationCode: authorizationCodeFlow,
	grantDeviceCode:        deviceCodeFlow,
	grantOAuth1:            oauth1Flow,
}

// grantRequest is what a flow works with: the token request common to every grant (endpoint,
// client authentication, scopes, parameters), the role, and the refresh token the role holds.
type grantRequest struct {
	client *oauthclient.Client
	req    oauthclient.TokenRequest
	name   string
	role   *roleEntry
	// refreshToken may be sent for the role; stranded marks one that exists but was issued to
	// another client or provider, and may not.
	refreshToken string
	stranded     bool
	// exchange holds the token exchange grant's subject and actor tokens.
	exchange exchangeInputs
	now      time.Time
	// mountKey is the current signing key of a mount key; its errors name field.
	mountKey func(field, name string) (*oauthclient.SigningKey, error)
}

// grantOutcome is what one shared grant produced for all the readers waiting on it.
type grantOutcome struct {
	token *tokenEntry
	// err, with a token, says why the still-valid cached token is served instead of a new one.
	err error
	// warning explains why a cached token was served instead of the new one asked for.
	warning string
}

// grantCaller is who asks for a token, which decides how far it may push the provider.
type grantCaller int

const (
	// byRead may force a new grant with min_seconds, but not within forcedGrantInterval of the
	// last forced one, so that no reader can make the plugin hammer the provider.
	byRead grantCaller = iota
	byRefresher
	// byRotate always obtains a new token.
	byRotate
)

// forcedGrantInterval is how long a token obtained by force is served to readers who ask for
// more than it has, instead of obtaining yet another.
const forcedGrantInterval = 5 * time.Second

// forceGrant as the minimum time left makes obtainToken perform the grant whatever the cached
// token has left.
const forceGrant = time.Duration(math.MaxInt64)

// obtainToken returns a token with at least minLeft to live, performing the role's grant when
// the current one falls short. Concurrent callers for one role share one grant.
func (b *backend) obtainToken(ctx context.Context, s logical.Storage, name string, minLeft time.Duration, caller grantCaller) grantOutcome {
	v, _, _ := b.grants.Do(name, func() (any, error) {
		if !b.grantsOpen.enter() {
			return grantOutcome{err: errClosing}, nil
		}
		defer b.grantsOpen.leave()
		// The grant outlives any one reader: a reader that gives up must not cancel it for the
		// others, nor lose a rotated refresh token halfway.
		return b.grant(context.WithoutCancel(ctx), s, name, minLeft, caller), nil
	})
	return v.(grantOutcome)
}

// grant performs the role's grant unless the current token already has minLeft (and more than
// its refresh threshold) to live, and persists the result before returning it.
func (b *backend) grant(ctx context.Context, s logical.Storage, name string, minLeft time.Duration, caller grantCaller) grantOutcome {
	role, err := b.role(ctx, s, name)
	if err != nil {
		return grantOutcome{err: err}
	}
	if role == nil {
		return grantOutcome{err: unknownRoleError(name)}
	}
	cfg, err := b.config(ctx, s)
	if err != nil {
		return grantOutcome{err: err}
	}
	if cfg == nil {
		return grantOutcome{err: errNoConfig}
	}
	bd, err := b.binding(ctx, s, name, role, cfg)
	if err != nil {
		return grantOutcome{err: err}
	}
	current, err := b.currentToken(ctx, s, name)
	if err != nil {
		return grantOutcome{err: err}
	}
	if _, unsaved := b.unsaved.Load(name); unsaved {
		// Store what storage refused before asking the provider for anything new. The failures
		// it records were storage's, and are over once it is stored.
		stored := *current
		stored.LastError, stored.LastErrorAt, stored.ConsecutiveFailures, stored.RetryAt = "", time.Time{}, 0, time.Time{}
		// errRoleChanged: the role was edited since; what still serves it is stored now.
		if err := b.storeToken(ctx, s, name, &stored); err != nil && !errors.Is(err, errRoleChanged) {
			return b.failed(ctx, s, name, bd.access, current, err)
		}
		if current, err = b.currentToken(ctx, s, name); err != nil {
			return grantOutcome{err: err}
		}
	}
	now := b.now()
	policy := effectivePolicy(role, cfg)
	if current.serves(bd, policy, minLeft, now) {
		return grantOutcome{token: current}
	}
	left, threshold := current.standing(bd, policy, now)
	forced := left > threshold
	if forced && caller == byRead && current.Forced && now.Sub(current.ObtainedAt) < forcedGrantInterval {
		return grantOutcome{token: current, warning: fmt.Sprintf(
			"this token was obtained %s ago by another read that asked for a new one; min_seconds can obtain the next one from %s",
			now.Sub(current.ObtainedAt).Round(time.Second), rfc3339(current.ObtainedAt.Add(forcedGrantInterval)))}
	}
	if current != nil && now.Before(current.RetryAt) {
		// The provider asked us to wait (Retry-After): nobody calls it before then.
		err := fmt.Errorf("the provider asked to retry after %s: %s", rfc3339(current.RetryAt), current.LastError)
		if left > 0 {
			return grantOutcome{token: current, err: err}
		}
		return grantOutcome{err: err}
	}

	var in exchangeInputs
	if role.chains() {
		// The token is bound to the subject and actor tokens it is obtained with.
		if in, err = b.chainTokens(ctx, s, name, role); err != nil {
			return b.failed(ctx, s, name, bd.access, current, err)
		}
		bd = chained(b.cache.binding(name, role, cfg), in)
	}
	sent := time.Now()
	tok, err := b.requestToken(ctx, s, name, cfg, role, bd, current, in)
	if nae := (*notAuthorizedError)(nil); errors.As(err, &nae) {
		// Nothing was asked of the provider: the role waits for a person, as its status shows.
		return grantOutcome{err: err}
	}
	b.metrics.observeGrant(roleLabel(name, cfg), role.GrantType, time.Since(sent), err)
	if err != nil {
		return b.failed(ctx, s, name, bd.access, current, err)
	}
	next := newTokenEntry(tok, current, role, bd, now)
	next.Forced = forced
	if err := b.storeToken(ctx, s, name, next); err != nil {
		if !errors.Is(err, errRoleChanged) {
			b.Logger().Error("storing token failed", "role", name, "error", err)
		}
		return grantOutcome{err: err}
	}
	return grantOutcome{token: next}
}

// newTokenEntry records a token response obtained for bd with a request sent at now, keeping
// the previous refresh token when the provider did not rotate it (RFC 6749 §6).
func newTokenEntry(tok *oauthclient.Token, prev *tokenEntry, role *roleEntry, bd tokenBinding, now time.Time) *tokenEntry {
	lifetime := tok.ExpiresIn
	if lifetime == 0 {
		lifetime = role.DefaultTTL
	}
	next := &tokenEntry{
		AccessToken:    tok.AccessToken,
		TokenType:      tok.TokenType,
		IDToken:        tok.IDToken,
		Scope:          tok.Scope,
		IssuedType:     tok.IssuedTokenType,
		ObtainedAt:     now,
		ExpiresAt:      now.Add(lifetime),
		Binding:        bd.access,
		RefreshToken:   tok.RefreshToken,
		RefreshBinding: bd.refresh,
		RefreshSource:  bd.refreshSource,
		Grants:         1,
	}
	if prev != nil {
		next.Grants += prev.Grants
		next.Failures = prev.Failures
		if next.RefreshToken == "" {
			next.RefreshToken, _ = prev.refreshTokenFor(bd)
		}
	}
	return next
}

// failed records a failed grant and returns, with the error, the cached token that may still be
// served. A role edited or deleted meanwhile gets neither the record nor its old token.
func (b *backend) failed(ctx context.Context, s logical.Storage, name, grantBinding string, current *tokenEntry, cause error) grantOutcome {
	b.Logger().Warn("token grant failed", "role", name, "error", cause)
	marked, err := b.recordFailure(ctx, s, name, grantBinding, cause)
	b.reschedule(ctx, s, name)
	switch {
	case errors.Is(err, errRoleChanged):
		return grantOutcome{err: fmt.Errorf("%w (the attempt failed: %w)", errRoleChanged, cause)}
	case err != nil:
		b.Logger().Warn("recording the failure failed", "role", name, "error", err)
		marked = current
	}
	if marked != nil && (marked.Binding == "" || marked.Binding == grantBinding) && marked.remaining(b.now()) > 0 {
		return grantOutcome{token: marked, err: cause}
	}
	return grantOutcome{err: cause}
}

// requestToken performs the role's grant with the refresh token it may use (and, for a token
// exchange, the subject and actor tokens in).
func (b *backend) requestToken(ctx context.Context, s logical.Storage, name string, cfg *configEntry, role *roleEntry, bd tokenBinding, current *tokenEntry, in exchangeInputs) (*oauthclient.Token, error) {
	return withSecretNext(ctx, b, s, name, cfg, role, func(client *oauthclient.Client, req oauthclient.TokenRequest) (*oauthclient.Token, error) {
		g := &grantRequest{client: client, req: req, name: name, role: role, exchange: in, now: b.now(), mountKey: func(field, key string) (*oauthclient.SigningKey, error) {
			return b.mountSigningKey(ctx, s, field, key)
		}}
		g.refreshToken, g.stranded = current.refreshTokenFor(bd)
		return grantFlows[role.GrantType].request(ctx, g)
	})
}

// withSecretNext sends one of the role's requests to the provider with the role's token client
// and base request. When the provider refuses the client secret (invalid_client) and a
// client_secret_next is set, it is sent once more with that one, which is promoted if the
// provider takes it. Every request that authenticates the role's client goes through it.
func withSecretNext[T any](ctx context.Context, b *backend, s logical.Storage, name string, cfg *configEntry, role *roleEntry, send func(*oauthclient.Client, oauthclient.TokenRequest) (T, error)) (T, error) {
	attempt := func(secret string) (T, string, error) {
		client, req, err := b.tokenClient(ctx, s, name, cfg, role)
		if err != nil {
			var zero T
			return zero, "", err
		}
		if secret != "" {
			req.Auth.ClientSecret = secret
		}
		out, err := send(client, req)
		return out, req.Auth.Method, err
	}
	out, method, err := attempt("")
	creds := role.effectiveCredentials(cfg)
	if err == nil || creds.ClientSecretNext == "" || !isInvalidClient(err) || !slices.Contains(secretAuthMethods, method) {
		return out, err
	}
	out, _, nextErr := attempt(creds.ClientSecretNext)
	if nextErr != nil {
		var zero T
		return zero, fmt.Errorf("%w (client_secret_next was tried too: %v)", err, nextErr)
	}
	if _, err := b.promoteSecret(ctx, s, name, creds.ClientSecret, creds.ClientSecretNext); err != nil {
		// The answer is good; the promotion is tried again by the next request that needs it.
		b.Logger().Warn("promoting client_secret_next failed", "role", name, "error", err)
	}
	return out, nil
}

// clientCertificate is the mutual TLS certificate and key: a mount key with client_cert or its own
// self-signed certificate, else client_cert with client_key.
func (b *backend) clientCertificate(ctx context.Context, s logical.Storage, creds clientCredentials) (*tls.Certificate, error) {
	if creds.ClientKeyName != "" {
		k, err := b.key(ctx, s, creds.ClientKeyName)
		if err != nil {
			return nil, err
		}
		if k == nil {
			return nil, fieldErrorf("client_key_name", "mount key %q does not exist", clipInput(creds.ClientKeyName))
		}
		return k.certificate(creds.ClientCert)
	}
	if creds.ClientCert == "" {
		return nil, fieldErrorf("client_cert", "mutual TLS client authentication needs the client's certificate")
	}
	return parseClientCertificate(creds.ClientCert, creds.ClientKey, "client_key")
}

// secretAuthMethods send (or sign with) the client secret.
var secretAuthMethods = []string{oauthclient.AuthClientSecretBasic, oauthclient.AuthClientSecretPost, oauthclient.AuthClientSecretJWT}

func isInvalidClient(err error) bool {
	var oe *oauthclient.Error
	return errors.As(err, &oe) && oe.Code == "invalid_client"
}

func isInvalidGrant(err error) bool {
	var oe *oauthclient.Error
	return errors.As(err, &oe) && oe.InvalidGrant()
}

// tokenClient is the base request of the role's token requests, with its DPoP hook, and the client
// that sends it, which presents the role's certificate when it authenticates with mutual TLS:
// every request that obtains a token for a role goes through it.
func (b *backend) tokenClient(ctx context.Context, s logical.Storage, name string, cfg *configEntry, role *roleEntry) (*oauthclient.Client, oauthclient.TokenRequest, error) {
	req, err := b.baseRequest(ctx, s, cfg, role)
	if err != nil {
		return nil, req, err
	}
	if req.DPoP, err = b.dpopRequest(name, role); err != nil {
		return nil, req, err
	}
	client, err := b.clientFor(cfg, req.Auth.Certificate)
	return client, req, err
}

// baseRequest is the token request common to every grant: endpoint, client authentication,
// scopes and extra parameters.
func (b *backend) baseRequest(ctx context.Context, s logical.Storage, cfg *configEntry, role *roleEntry) (oauthclient.TokenRequest, error) {
	creds := role.effectiveCredentials(cfg)
	method, err := chooseAuthMethod(creds, cfg)
	if err != nil {
		return oauthclient.TokenRequest{}, err
	}
	auth := oauthclient.ClientAuth{Method: method, ClientID: creds.ClientID, ClientSecret: creds.ClientSecret}
	tokenURL := cfg.tokenEndpoint()
	switch {
	case oauthclient.IsMTLS(method):
		auth.Certificate, err = b.clientCertificate(ctx, s, creds)
		tokenURL = cfg.mtlsEndpoint("token_endpoint", cfg.TokenURL, tokenURL)
	case method != oauthclient.AuthPrivateKeyJWT:
	case creds.ClientKeyName != "":
		auth.Key, err = b.mountSigningKey(ctx, s, "client_key_name", creds.ClientKeyName)
	default:
		auth.Key, err = creds.signingKey()
	}
	if err != nil {
		return oauthclient.TokenRequest{}, err
	}
	params := url.Values{}
	for _, p := range []map[string]string{role.TokenParams, role.SecretTokenParams} {
		for k, v := range p {
			params.Set(k, v)
		}
	}
	if role.Audience != "" {
		params.Set("audience", role.Audience)
	}
	for _, r := range role.Resource {
		params.Add("resource", r)
	}
	return oauthclient.TokenRequest{
		TokenURL: tokenURL,
		Params:   params,
		Scopes:   role.Scopes,
		Auth:     auth,
	}, nil
}
