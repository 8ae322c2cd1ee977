package oauth

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
)

// tokenEntry is a role's cached token and its refresh bookkeeping, stored at "tokens/<name>".
type tokenEntry struct {
	AccessToken string    `json:"access_token,omitempty"`
	TokenType   string    `json:"token_type,omitempty"`
	IDToken     string    `json:"id_token,omitempty"`
	Scope       string    `json:"scope,omitempty"`
	ExpiresAt   time.Time `json:"expires_at"`
	ObtainedAt  time.Time `json:"obtained_at"`
	// RefreshToken is the newest refresh token the provider issued; after a rotation it may be
	// the only copy in the world.
	RefreshToken string `json:"refresh_token,omitempty"`

	LastError           string    `json:"last_error,omitempty"`
	LastErrorAt         time.Time `json:"last_error_at"`
	ConsecutiveFailures int       `json:"consecutive_failures"`
	Grants              int64     `json:"grants"`
	Failures            int64     `json:"failures"`
	// RetryAt is when the provider's Retry-After allows the next attempt.
	RetryAt time.Time `json:"retry_at"`
}

// remaining is how long the access token is still good for (zero when there is none).
func (t *tokenEntry) remaining(now time.Time) time.Duration {
	if t == nil || t.AccessToken == "" || !now.Before(t.ExpiresAt) {
		return 0
	}
	return t.ExpiresAt.Sub(now)
}

func (t *tokenEntry) lifetime() time.Duration { return t.ExpiresAt.Sub(t.ObtainedAt) }

// refreshThreshold is the time left below which a token is replaced:
// max(buffer, fraction × lifetime), capped at 90% of the lifetime so that even a token shorter
// than the buffer is used for a while before it is replaced.
func refreshThreshold(p refreshPolicy, lifetime time.Duration) time.Duration {
	th := max(p.RefreshBuffer, time.Duration(p.RefreshFraction*float64(lifetime)))
	return min(th, lifetime*9/10)
}

// effectivePolicy takes each refresh setting from the role, else from the config (cfg may be nil).
func effectivePolicy(role *roleEntry, cfg *configEntry) refreshPolicy {
	p, defaults := role.refreshPolicy, configPolicy(cfg)
	if p.RefreshBuffer == 0 {
		p.RefreshBuffer = defaults.RefreshBuffer
	}
	if p.RefreshFraction == 0 {
		p.RefreshFraction = defaults.RefreshFraction
	}
	return p
}

// currentToken is the role's newest token: one storage refused, else the cached or stored one.
func (b *backend) currentToken(ctx context.Context, s logical.Storage, name string) (*tokenEntry, error) {
	if v, ok := b.unsaved.Load(name); ok {
		return v.(*tokenEntry), nil
	}
	return loadCached[tokenEntry](ctx, b, &b.cache.tokens, s, tokenPrefix, name)
}

var errRoleChanged = errors.New("the role was changed or deleted while its token was being obtained; read again")

// storeToken persists next as the role's token, provided the role is still the one the token
// was obtained for. A token storage refuses is kept in memory and stored again on the next try.
func (b *backend) storeToken(ctx context.Context, s logical.Storage, name string, fingerprint [32]byte, next *tokenEntry) error {
	lock := b.roleLock(name)
	lock.Lock()
	defer lock.Unlock()

	role := new(roleEntry)
	found, err := getJSON(ctx, s, rolePrefix+name, role)
	if err != nil {
		return b.holdUnsaved(name, next, err)
	}
	if !found {
		return errRoleChanged
	}
	if role.grantFingerprint() != fingerprint {
		return b.keepRotatedRefreshToken(ctx, s, name, next)
	}
	if err := putJSON(ctx, s, tokenPrefix+name, next); err != nil {
		return b.holdUnsaved(name, next, err)
	}
	b.unsaved.Delete(name)
	b.cache.tokens.Store(name, next)
	b.reschedule(ctx, s, name)
	return nil
}

// keepRotatedRefreshToken handles a token obtained for a role that was edited meanwhile: the
// access token is for the old grant and is dropped, but where the edit kept the refresh token
// (one the provider has just rotated away), the rotated one takes its place. Called under the
// role's lock.
func (b *backend) keepRotatedRefreshToken(ctx context.Context, s logical.Storage, name string, next *tokenEntry) error {
	stored := new(tokenEntry)
	found, err := getJSON(ctx, s, tokenPrefix+name, stored)
	if err != nil || !found || stored.AccessToken != "" || stored.RefreshToken == "" || next.RefreshToken == "" {
		return errRoleChanged
	}
	stored.RefreshToken = next.RefreshToken
	if err := putJSON(ctx, s, tokenPrefix+name, stored); err != nil {
		return b.holdUnsaved(name, stored, err)
	}
	b.cache.tokens.Store(name, stored)
	return errRoleChanged
}

// holdUnsaved keeps a token storage refused, marked with the failure so that the role's status
// tells the operator its (possibly rotated) refresh token exists only in memory until stored.
func (b *backend) holdUnsaved(name string, next *tokenEntry, cause error) error {
	err := fmt.Errorf("the new token could not be stored (kept in memory, storing is retried): %w", cause)
	held := *next
	held.LastError = err.Error()
	held.LastErrorAt = b.now()
	b.unsaved.Store(name, &held)
	return err
}

// dropAccessToken forgets the cached access token so the next read performs the grant; the
// refresh token is kept when it still serves the role.
func (b *backend) dropAccessToken(ctx context.Context, s logical.Storage, name string, keepRefresh bool) error {
	b.cache.tokens.Delete(name)
	tok := new(tokenEntry)
	found, err := getJSON(ctx, s, tokenPrefix+name, tok)
	if err != nil {
		return err
	}
	// A token storage refused holds the newest refresh token: keep that one, and hold it until
	// it is written.
	if held, ok := b.unsaved.Load(name); ok {
		tok, found = held.(*tokenEntry), true
	}
	if !found {
		return nil
	}
	if !keepRefresh || tok.RefreshToken == "" {
		err = s.Delete(ctx, tokenPrefix+name)
	} else {
		err = putJSON(ctx, s, tokenPrefix+name, &tokenEntry{
			RefreshToken: tok.RefreshToken,
			Grants:       tok.Grants,
			Failures:     tok.Failures,
		})
	}
	if err == nil {
		b.unsaved.Delete(name)
	}
	return err
}
