package oauth

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"time"

	"github.com/hashicorp/vault/sdk/logical"

	"github.com/oauth-broker/vault-plugin-secrets-oauth/internal/oauthclient"
)

// errNoConfig is returned when a role is used before the mount has a provider.
var errNoConfig = errors.New("the provider is not configured: write oauth/config first")

// grantOutcome is what one shared grant produced for all the readers waiting on it.
type grantOutcome struct {
	token *tokenEntry
	// fresh is false when the grant failed and token is the still-valid cached one.
	fresh bool
	err   error
}

// obtainToken returns a token with at least minLeft to live, performing the role's grant when
// the current one falls short. Concurrent callers for one role share one grant.
func (b *backend) obtainToken(ctx context.Context, s logical.Storage, name string, minLeft time.Duration) grantOutcome {
	v, _, _ := b.grants.Do(name, func() (any, error) {
		// The grant outlives any one reader: a reader that gives up must not cancel it for the
		// others, nor lose a rotated refresh token halfway.
		return b.refresh(context.WithoutCancel(ctx), s, name, minLeft), nil
	})
	return v.(grantOutcome)
}

// refresh performs the role's grant unless the current token already has minLeft (and more
// than its refresh threshold) to live, and persists the result before returning it.
func (b *backend) refresh(ctx context.Context, s logical.Storage, name string, minLeft time.Duration) grantOutcome {
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
	current, err := b.currentToken(ctx, s, name)
	if err != nil {
		return grantOutcome{err: err}
	}
	if _, pending := b.unsaved.Load(name); pending {
		// Store what storage refused before asking the provider for anything new. The failures
		// it records were storage's, and are over once it is stored.
		stored := *current
		stored.LastError, stored.LastErrorAt, stored.ConsecutiveFailures, stored.RetryAt = "", time.Time{}, 0, time.Time{}
		if err := b.storeToken(ctx, s, name, role.grantFingerprint(), &stored); err != nil {
			return b.failed(ctx, s, name, current, err)
		}
		current = &stored
	}
	now := b.now()
	if left := current.remaining(now); left > 0 && left > max(minLeft, refreshThreshold(effectivePolicy(role, cfg), current.lifetime())) {
		return grantOutcome{token: current, fresh: true}
	}

	if current != nil && now.Before(current.RetryAt) && current.remaining(now) > 0 {
		// The provider asked us to wait (Retry-After): honour it while a valid token remains.
		return grantOutcome{token: current, err: fmt.Errorf("the provider asked to retry after %s: %s", current.RetryAt.UTC().Format(time.RFC3339), current.LastError)}
	}

	fingerprint := role.grantFingerprint()
	tok, err := b.requestToken(ctx, cfg, role, current)
	if err != nil {
		return b.failed(ctx, s, name, current, err)
	}
	next := newTokenEntry(tok, current, role, now)
	if err := b.storeToken(ctx, s, name, fingerprint, next); err != nil {
		if errors.Is(err, errRoleChanged) {
			return grantOutcome{err: err}
		}
		b.Logger().Error("storing token failed", "role", name, "error", err)
		return grantOutcome{err: err}
	}
	return grantOutcome{token: next, fresh: true}
}

// newTokenEntry records a token response, keeping the previous refresh token when the provider
// did not rotate it (RFC 6749 §6).
func newTokenEntry(tok *oauthclient.Token, prev *tokenEntry, role *roleEntry, now time.Time) *tokenEntry {
	lifetime := tok.ExpiresIn
	if lifetime <= 0 {
		lifetime = role.DefaultTTL
	}
	next := &tokenEntry{
		AccessToken:  tok.AccessToken,
		TokenType:    tok.TokenType,
		IDToken:      tok.IDToken,
		Scope:        tok.Scope,
		ObtainedAt:   now,
		ExpiresAt:    now.Add(lifetime),
		RefreshToken: tok.RefreshToken,
		Grants:       1,
	}
	if prev != nil {
		next.Grants += prev.Grants
		next.Failures = prev.Failures
		if next.RefreshToken == "" {
			next.RefreshToken = prev.RefreshToken
		}
	}
	return next
}

// failed records a failed grant and returns the still-valid cached token, if any, with the error.
func (b *backend) failed(ctx context.Context, s logical.Storage, name string, current *tokenEntry, cause error) grantOutcome {
	b.Logger().Warn("token grant failed", "role", name, "error", cause)
	// Bookkeeping only: the token itself stays exactly as it was.
	var marked tokenEntry
	if current != nil {
		marked = *current
	}
	marked.LastError = cause.Error()
	marked.LastErrorAt = b.now()
	marked.ConsecutiveFailures++
	marked.Failures++
	marked.RetryAt = retryAfter(cause, marked.LastErrorAt)
	if _, pending := b.unsaved.Load(name); pending {
		b.unsaved.Store(name, &marked)
	} else if err := b.recordFailure(ctx, s, name, &marked); err != nil {
		b.Logger().Warn("recording the failure failed", "role", name, "error", err)
	}
	b.reschedule(ctx, s, name)
	if marked.remaining(b.now()) > 0 {
		return grantOutcome{token: &marked, err: cause}
	}
	return grantOutcome{err: cause}
}

func (b *backend) recordFailure(ctx context.Context, s logical.Storage, name string, marked *tokenEntry) error {
	lock := b.roleLock(name)
	lock.Lock()
	defer lock.Unlock()
	if err := putJSON(ctx, s, tokenPrefix+name, marked); err != nil {
		return err
	}
	b.cache.tokens.Store(name, marked)
	return nil
}

// requestToken performs the role's grant. Grants that hold a refresh token use it first.
func (b *backend) requestToken(ctx context.Context, cfg *configEntry, role *roleEntry, current *tokenEntry) (*oauthclient.Token, error) {
	client, err := b.client(cfg)
	if err != nil {
		return nil, err
	}
	req, err := baseRequest(cfg, role)
	if err != nil {
		return nil, err
	}
	refreshToken := role.RefreshToken
	if current != nil && current.RefreshToken != "" {
		refreshToken = current.RefreshToken
	}

	switch role.GrantType {
	case grantRefreshToken:
		tok, err := client.Exchange(ctx, withRefreshToken(req, refreshToken))
		if isInvalidGrant(err) {
			return nil, fmt.Errorf("%w; the refresh token is no longer accepted: import a new one with vault write <mount>/roles/<name> refresh_token=...", err)
		}
		return tok, err
	case grantPassword:
		if current != nil && current.RefreshToken != "" {
			tok, err := client.Exchange(ctx, withRefreshToken(req, current.RefreshToken))
			if !isInvalidGrant(err) {
				return tok, err
			}
			// The refresh token expired or was revoked: sign in again with the password.
		}
		req.Params.Set("username", role.Username)
		req.Params.Set("password", role.Password)
	case grantJWTBearer:
		assertion, err := signAssertion(role, req, b.now())
		if err != nil {
			return nil, err
		}
		req.Params.Set("assertion", assertion)
	}
	return client.Exchange(ctx, req)
}

func isInvalidGrant(err error) bool {
	var oe *oauthclient.Error
	return errors.As(err, &oe) && oe.InvalidGrant()
}

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

// baseRequest is the token request common to every grant: endpoint, client authentication,
// scopes and extra parameters.
func baseRequest(cfg *configEntry, role *roleEntry) (oauthclient.TokenRequest, error) {
	creds := role.effectiveCredentials(cfg)
	method, err := chooseAuthMethod(creds, cfg)
	if err != nil {
		return oauthclient.TokenRequest{}, err
	}
	auth := oauthclient.ClientAuth{Method: method, ClientID: creds.ClientID, ClientSecret: creds.ClientSecret}
	if method == oauthclient.AuthPrivateKeyJWT {
		if auth.Key, err = creds.signingKey(); err != nil {
			return oauthclient.TokenRequest{}, err
		}
	}
	params := url.Values{}
	for k, v := range role.TokenParams {
		params.Set(k, v)
	}
	if role.Audience != "" {
		params.Set("audience", role.Audience)
	}
	for _, r := range role.Resource {
		params.Add("resource", r)
	}
	return oauthclient.TokenRequest{
		TokenURL:  cfg.tokenEndpoint(),
		GrantType: oauthclient.GrantTypeURI(role.GrantType),
		Params:    params,
		Scopes:    role.Scopes,
		Auth:      auth,
	}, nil
}

// signAssertion builds the RFC 7523 §2.1 assertion: iss and sub default to the client ID and
// aud to the token endpoint.
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

func unknownRoleError(name string) error {
	return &fieldError{field: "name", msg: fmt.Sprintf("role %q does not exist", clipInput(name))}
}
