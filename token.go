package oauth

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"time"
)

// tokenEntry is a role's cached token and its refresh bookkeeping, stored at "tokens/<name>".
type tokenEntry struct {
	entryFormat
	AccessToken string `json:"access_token,omitempty"`
	TokenType   string `json:"token_type,omitempty"`
	IDToken     string `json:"id_token,omitempty"`
	Scope       string `json:"scope,omitempty"`
	// IssuedType is a token exchange's issued_token_type (RFC 8693 §2.2.1).
	IssuedType string    `json:"issued_token_type,omitempty"`
	ExpiresAt  time.Time `json:"expires_at"`
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

// standing is how the access token stands for bd under policy p: the time it may still be
// served, and the threshold below which it is replaced.
func (t *tokenEntry) standing(bd tokenBinding, p refreshPolicy, now time.Time) (left, threshold time.Duration) {
	return t.servable(bd, now), refreshThreshold(p, t.lifetime())
}

// serves reports whether the access token may answer a caller who needs minLeft: it was obtained
// for bd and has more than minLeft and its refresh threshold left.
func (t *tokenEntry) serves(bd tokenBinding, p refreshPolicy, minLeft time.Duration, now time.Time) bool {
	left, threshold := t.standing(bd, p, now)
	return left > max(minLeft, threshold)
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
	// refresh changes with where a refresh token is valid: the grant type, the client ID, and
	// the provider (its issuer, or its token endpoint without one).
	refresh string
	// refreshSource changes with the chain of refresh tokens: the role's incarnation and the
	// credential the chain starts from (the imported refresh token, the password grant's
	// username, or a person's authorization). A chain of another source is never used, nor kept.
	refreshSource string
}

func bindingOf(role *roleEntry, cfg *configEntry) tokenBinding {
	creds := role.effectiveCredentials(cfg)
	grant := *role
	grant.entryFormat = entryFormat{}
	// A mount key's name binds the token, its rotations do not: the key stays the client's.
	grant.clientCredentials = clientCredentials{ClientID: creds.ClientID, AuthMethod: creds.AuthMethod, ClientKeyName: creds.ClientKeyName}
	grant.Password, grant.AssertionKey = "", ""
	grant.ConsumerSecret, grant.ConsumerPrivateKey, grant.Token, grant.TokenSecret = "", "", "", ""
	// The key's thumbprint: a token bound to one key is never served for another.
	grant.DPoPKey = role.dpopThumbprint()
	grant.RefreshToken = digest(role.RefreshToken)
	grant.SecretTokenParams = nil
	grant.DefaultTTL, grant.MaxTTL, grant.Lease, grant.refreshPolicy, grant.RefreshOverrides = 0, 0, nil, refreshPolicy{}, nil
	// Only the authorization request uses them; the tokens it led to stay good.
	grant.RedirectURI, grant.AuthParams = "", nil
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
	case grantAuthorizationCode, grantDeviceCode:
		if role.Authorization != nil {
			source = role.Authorization.ID
		}
	}
	return tokenBinding{
		access:        digestJSON(struct{ Grant, SecretParams, Endpoint any }{grant, sortedKeys(role.SecretTokenParams), endpoint}),
		refresh:       digestJSON([]string{role.GrantType, creds.ClientID, provider}),
		refreshSource: digestJSON([]string{role.Incarnation, source}),
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
