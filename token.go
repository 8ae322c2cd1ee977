package oauth

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
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
	// ObtainedAt is when the request that obtained the token was sent.
	ObtainedAt time.Time `json:"obtained_at"`
	// Forced marks a token obtained while the previous one was still good (min_seconds, rotate).
	Forced bool `json:"forced,omitempty"`
	// Binding is tokenBinding.access of the role when the token was obtained.
	Binding string `json:"binding,omitempty"`

	// RefreshToken is the newest refresh token the provider issued; after a rotation it may be
	// the only copy in the world.
	RefreshToken string `json:"refresh_token,omitempty"`
	// RefreshBinding and RefreshSource are tokenBinding's: where the refresh token may be sent,
	// and which credential its chain started from.
	RefreshBinding string `json:"refresh_binding,omitempty"`
	RefreshSource  string `json:"refresh_source,omitempty"`

	LastError           string    `json:"last_error,omitempty"`
	LastErrorAt         time.Time `json:"last_error_at"`
	ConsecutiveFailures int       `json:"consecutive_failures"`
	Grants              int64     `json:"grants"`
	Failures            int64     `json:"failures"`
	// RetryAt is when the provider's Retry-After allows the next attempt.
	RetryAt time.Time `json:"retry_at"`
}

// remaining is how long the access token is still good for, in whole seconds (zero when there is
// none, or less than a second is left): a lease never outlives its token.
func (t *tokenEntry) remaining(now time.Time) time.Duration {
	if t == nil || t.AccessToken == "" {
		return 0
	}
	return max(t.ExpiresAt.Sub(now).Truncate(time.Second), 0)
}

func (t *tokenEntry) lifetime() time.Duration {
	if t == nil {
		return 0
	}
	return t.ExpiresAt.Sub(t.ObtainedAt)
}

// servable is the time the access token has left if it may be served for bd, else zero.
// Entries written before bindings existed have none and were kept in step by role writes.
func (t *tokenEntry) servable(bd tokenBinding, now time.Time) time.Duration {
	if t == nil || (t.Binding != "" && t.Binding != bd.access) {
		return 0
	}
	return t.remaining(now)
}

// refreshTokenFor is the refresh token that may be used for bd, and whether a refresh token of
// the same chain exists but may not be sent (it was issued to another client or provider).
func (t *tokenEntry) refreshTokenFor(bd tokenBinding) (token string, stranded bool) {
	if t == nil || t.RefreshToken == "" || (t.RefreshSource != "" && t.RefreshSource != bd.refreshSource) {
		return "", false
	}
	if t.RefreshBinding != "" && t.RefreshBinding != bd.refresh {
		return "", true
	}
	return t.RefreshToken, false
}

// tokenBinding names what a role's tokens are for. A token is served, and a refresh token sent,
// only for the binding it was obtained with, so an edit needs no clean-up to take effect and a
// grant that finishes after an edit cannot put a stale token back.
type tokenBinding struct {
	// access changes with anything that changes the token the provider issues: the role's
	// incarnation and grant (scopes, audience, parameters, the username or imported refresh
	// token; not the values of secrets), the effective client ID and auth method, and the
	// token endpoint.
	access string
	// refresh changes with where a refresh token is valid: the role's incarnation, the grant
	// type, the client ID, and the provider (its issuer, or its token endpoint without one).
	refresh string
	// refreshSource changes with the credential a chain of refresh tokens starts from: the
	// imported refresh token, or the password grant's username.
	refreshSource string
}

func bindingOf(role *roleEntry, cfg *configEntry) tokenBinding {
	creds := role.effectiveCredentials(cfg)
	grant := *role
	grant.clientCredentials = clientCredentials{ClientID: creds.ClientID, AuthMethod: creds.AuthMethod}
	grant.Password, grant.AssertionKey = "", ""
	grant.RefreshToken = digest(role.RefreshToken)
	grant.SecretTokenParams = nil
	grant.DefaultTTL, grant.MaxTTL, grant.refreshPolicy, grant.RefreshOverrides = 0, 0, refreshPolicy{}, nil
	var endpoint, provider string
	if cfg != nil {
		endpoint, provider = cfg.tokenEndpoint(), firstNonEmpty(cfg.Issuer, cfg.tokenEndpoint())
	}
	source := ""
	switch role.GrantType {
	case grantRefreshToken:
		source = role.RefreshToken
	case grantPassword:
		source = role.Username
	}
	return tokenBinding{
		access:        digestJSON(struct{ Grant, SecretParams, Endpoint any }{grant, sortedKeys(role.SecretTokenParams), endpoint}),
		refresh:       digestJSON([]string{role.Incarnation, role.GrantType, creds.ClientID, provider}),
		refreshSource: digest(source),
	}
}

func digest(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}

func digestJSON(v any) string {
	buf, _ := json.Marshal(v)
	return digest(string(buf))
}

// currentToken is the role's newest token: one storage refused, else the cached or stored one.
func (b *backend) currentToken(ctx context.Context, s logical.Storage, name string) (*tokenEntry, error) {
	if v, ok := b.unsaved.Load(name); ok {
		return v.(*tokenEntry), nil
	}
	return b.cache.tokens.load(ctx, s, name)
}

var errRoleChanged = errors.New("the role or the config was changed or deleted while its token was being obtained; read again")

// loadBinding reads the role and config as storage has them now and returns the role's binding;
// errRoleChanged when either is gone. Called under the role's lock.
func (b *backend) loadBinding(ctx context.Context, s logical.Storage, name string) (tokenBinding, error) {
	role, err := readEntry[roleEntry](ctx, s, rolePrefix+name)
	if err != nil {
		return tokenBinding{}, err
	}
	cfg, err := b.config(ctx, s)
	if err != nil {
		return tokenBinding{}, err
	}
	if role == nil || cfg == nil {
		return tokenBinding{}, errRoleChanged
	}
	return bindingOf(role, cfg), nil
}

// storeToken persists next as the role's token if the role still has the binding next was
// obtained for. If it has not, but still takes next's refresh token (one the provider has just
// rotated to), that refresh token alone is kept. A token storage refuses is kept in memory and
// stored again on the next try.
func (b *backend) storeToken(ctx context.Context, s logical.Storage, name string, next *tokenEntry) error {
	lock := b.roleLock(name)
	lock.Lock()
	defer lock.Unlock()

	bd, err := b.loadBinding(ctx, s, name)
	switch {
	case errors.Is(err, errRoleChanged):
		return err
	case err != nil:
		return b.holdUnsaved(name, next, err)
	case next.Binding == bd.access:
		return b.putToken(ctx, s, name, next)
	}
	// A stranded refresh token (the client or provider changed) is kept too: it is good again
	// if the change is undone.
	if rt, stranded := next.refreshTokenFor(bd); rt == "" && !stranded {
		// Nothing in next serves the role: a token held since storage refused it is let go too.
		b.unsaved.Delete(name)
		return errRoleChanged
	}
	kept := &tokenEntry{
		RefreshToken: next.RefreshToken, RefreshBinding: next.RefreshBinding, RefreshSource: next.RefreshSource,
		Grants: next.Grants, Failures: next.Failures,
	}
	if err := b.putToken(ctx, s, name, kept); err != nil {
		return err
	}
	return errRoleChanged
}

// putToken writes the role's token entry, or holds it in memory when storage refuses. Called
// under the role's lock.
func (b *backend) putToken(ctx context.Context, s logical.Storage, name string, tok *tokenEntry) error {
	if err := putJSON(ctx, s, tokenPrefix+name, tok); err != nil {
		return b.holdUnsaved(name, tok, err)
	}
	b.unsaved.Delete(name)
	b.cache.tokens.set(name, tok)
	b.reschedule(ctx, s, name)
	return nil
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

// recordFailure notes a failed grant on the role's current entry, provided the role still has
// the binding the grant was for; it never brings back the entry of a deleted or edited role.
// It returns the entry as recorded.
func (b *backend) recordFailure(ctx context.Context, s logical.Storage, name string, grantBinding string, cause error) (*tokenEntry, error) {
	lock := b.roleLock(name)
	lock.Lock()
	defer lock.Unlock()

	mark := func(t *tokenEntry) *tokenEntry {
		marked := *t
		marked.LastError = cause.Error()
		marked.LastErrorAt = b.now()
		marked.ConsecutiveFailures++
		marked.Failures++
		marked.RetryAt = retryAfter(cause, marked.LastErrorAt)
		return &marked
	}
	if held, ok := b.unsaved.Load(name); ok {
		marked := mark(held.(*tokenEntry))
		b.unsaved.Store(name, marked)
		return marked, nil
	}
	bd, err := b.loadBinding(ctx, s, name)
	if err != nil {
		return nil, err
	}
	if bd.access != grantBinding {
		return nil, errRoleChanged
	}
	stored, err := readEntry[tokenEntry](ctx, s, tokenPrefix+name)
	if err != nil {
		return nil, err
	}
	if stored == nil {
		stored = &tokenEntry{Binding: grantBinding}
	}
	marked := mark(stored)
	if err := putJSON(ctx, s, tokenPrefix+name, marked); err != nil {
		return marked, err
	}
	b.cache.tokens.set(name, marked)
	return marked, nil
}

// clearToken removes what a role name's previous life left behind: its stored and held tokens.
// Called under the role's lock.
func (b *backend) clearToken(ctx context.Context, s logical.Storage, name string) error {
	if err := s.Delete(ctx, tokenPrefix+name); err != nil {
		return fmt.Errorf("deleting %s%s: %w", tokenPrefix, name, err)
	}
	b.cache.tokens.drop(name)
	b.unsaved.Delete(name)
	return nil
}
