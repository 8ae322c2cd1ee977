package oauth

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
	"github.com/oauth-broker/vault-plugin-secrets-oauth/internal/oauthclient"
)

// Storage of the authorizations under way. A role has at most one, at authzPrefix+<role>; an
// authorization code flow's state is found through statePrefix+<SHA-256 of the state>, so that
// no storage key (keys are not encrypted) shows a state. Both are seal-wrapped.
const (
	authzPrefix = "authz/"
	statePrefix = "states/"
)

// authorizeTTL is how long a person has to complete an authorization code flow.
const authorizeTTL = 10 * time.Minute

// Kinds of pending authorization.
const (
	kindCode   = "code"
	kindDevice = "device"
	// kindOAuth1 is OAuth 1.0a's three-legged flow: its temporary credentials stand for the
	// state (RFC 5849 §2).
	kindOAuth1 = "oauth1"
)

// Outcomes of a device flow that ended without tokens.
const (
	outcomeDenied  = "denied"
	outcomeExpired = "expired"
)

// pendingAuthorization is an authorization a person has yet to complete.
type pendingAuthorization struct {
	entryFormat
	// ID is random per start: a later start replaces this one, and what completes this one
	// must not complete that.
	ID   string `json:"id"`
	Kind string `json:"kind"`
	// Incarnation is the role's: a role deleted and created again does not inherit it.
	Incarnation string    `json:"incarnation"`
	ExpiresAt   time.Time `json:"expires_at"`

	// Authorization code: the state's digest, the redirect URI the code is bound to, the PKCE
	// verifier, the OpenID nonce, and the response mode asked for (empty: query), which says
	// whether a write to the callback is the browser's form post or a pasted code.
	StateDigest  string `json:"state_digest,omitempty"`
	RedirectURI  string `json:"redirect_uri,omitempty"`
	Verifier     string `json:"verifier,omitempty"`
	Nonce        string `json:"nonce,omitempty"`
	ResponseMode string `json:"response_mode,omitempty"`

	// OAuth 1.0a: the temporary credentials' secret (their identifier is the state).
	TemporarySecret string `json:"temporary_secret,omitempty"`

	// Device code (RFC 8628): the device code, the polling interval (slow_down adds 5 s), when
	// the next poll is due, the last poll's result, and the outcome once it ended without
	// tokens (denied, expired).
	DeviceCode string        `json:"device_code,omitempty"`
	Interval   time.Duration `json:"interval,omitempty"`
	NextPollAt time.Time     `json:"next_poll_at"`
	LastPoll   string        `json:"last_poll,omitempty"`
	LastPollAt time.Time     `json:"last_poll_at"`
	Outcome    string        `json:"outcome,omitempty"`
}

// stateEntry finds the role of an authorization code flow's state.
type stateEntry struct {
	Role string `json:"role"`
}

// randomToken is 256 random bits, base64url-encoded.
func randomToken() (string, error) {
	var buf [32]byte
	if _, err := rand.Read(buf[:]); err != nil {
		return "", err
	}
	return base64.RawURLEncoding.EncodeToString(buf[:]), nil
}

func (b *backend) pending(ctx context.Context, s logical.Storage, name string) (*pendingAuthorization, error) {
	return readEntry[pendingAuthorization](ctx, s, authzPrefix+name)
}

// replacePending stores next as the role's authorization under way, dropping the one it
// replaces. Called under the role's lock.
func (b *backend) replacePending(ctx context.Context, s logical.Storage, name string, next *pendingAuthorization) error {
	if err := b.dropPending(ctx, s, name); err != nil {
		return err
	}
	if next.StateDigest != "" {
		if err := putJSON(ctx, s, statePrefix+next.StateDigest, &stateEntry{Role: name}); err != nil {
			return err
		}
	}
	return putJSON(ctx, s, authzPrefix+name, next)
}

// dropPending deletes the role's authorization under way, if any, and stops polling for it.
// Called under the role's lock.
func (b *backend) dropPending(ctx context.Context, s logical.Storage, name string) error {
	b.devicePolls.stop(name)
	old, err := b.pending(ctx, s, name)
	if err != nil || old == nil {
		return err
	}
	if old.StateDigest != "" {
		if err := s.Delete(ctx, statePrefix+old.StateDigest); err != nil {
			return fmt.Errorf("deleting a state: %w", err)
		}
	}
	if err := s.Delete(ctx, authzPrefix+name); err != nil {
		return fmt.Errorf("deleting %s%s: %w", authzPrefix, name, err)
	}
	return nil
}

// errStaleAuthorization: the role was deleted, edited or authorized again while its
// authorization was being completed; nothing was stored.
var errStaleAuthorization = errors.New("the role was deleted or changed, or another authorization was started, while this one was being completed: nothing was stored; start again")

// completeAuthorization makes tok, which the provider issued for the role as it was when its
// binding was before, the role's token and starts a new refresh token chain from it. It is
// stored only if the role still has that binding and check (run under the role's lock) passes;
// a grant of the previous chain still in flight then finds the role's binding changed and stores
// nothing over it. It returns the authorization recorded.
func (b *backend) completeAuthorization(ctx context.Context, s logical.Storage, name string, before tokenBinding, tok *oauthclient.Token, sub string, sentAt time.Time, check func() error) (*authorization, error) {
	role, unlock, err := b.lockRole(ctx, s, name)
	defer unlock()
	if err != nil {
		return nil, err
	}
	cfg, err := b.config(ctx, s)
	if err != nil {
		return nil, err
	}
	if role == nil || cfg == nil || bindingOf(role, cfg).access != before.access {
		return nil, errStaleAuthorization
	}
	if err := check(); err != nil {
		return nil, err
	}
	authorized, err := b.storeAuthorization(ctx, s, name, role, sub)
	if err != nil {
		return nil, err
	}
	prev, err := b.currentToken(ctx, s, name)
	if err != nil {
		prev = nil
	}
	bd := bindingOf(authorized, cfg)
	// Storage refusing the token keeps it in memory and retries: the authorization stands.
	if err := b.putToken(ctx, s, name, newTokenEntry(tok, prev, authorized, bd, sentAt)); err != nil {
		b.Logger().Error("storing the authorized token failed; it is kept in memory", "role", name, "error", err)
	}
	return authorized.Authorization, nil
}

// storeAuthorization stores role with a new authorization, by the person sub when known, and
// returns it as stored. Called under the role's lock.
func (b *backend) storeAuthorization(ctx context.Context, s logical.Storage, name string, role *roleEntry, sub string) (*roleEntry, error) {
	id, err := randomID()
	if err != nil {
		return nil, err
	}
	authorized := *role
	authorized.Authorization = &authorization{ID: id, AuthorizedAt: b.now(), Subject: sub}
	if err := putJSON(ctx, s, rolePrefix+name, &authorized); err != nil {
		return nil, err
	}
	b.cache.roles.set(name, &authorized)
	return &authorized, nil
}

// checkIDToken checks an ID token that came with the tokens of an authorization (OpenID Connect
// Core §3.1.3.7: iss, aud, nonce) and returns its sub. Its signature is not checked: it came
// straight from the token endpoint over TLS (item 6 of that section).
func checkIDToken(raw string, cfg *configEntry, clientID, nonce string) (string, error) {
	if raw == "" {
		return "", nil
	}
	claims, err := oauthclient.ParseIDToken(raw)
	if err != nil {
		return "", err
	}
	if issuer := firstNonEmpty(cfg.discovered().Issuer, cfg.Issuer); issuer != "" && claims.Issuer != issuer {
		return "", fmt.Errorf("the ID token's issuer %q is not the provider's %q", clipInput(claims.Issuer), clipInput(issuer))
	}
	if !slices.Contains(claims.Audience, clientID) {
		return "", errors.New("the ID token is not for this client (aud)")
	}
	if nonce != "" && claims.Nonce != nonce {
		return "", errors.New("the ID token's nonce is not the one sent")
	}
	return claims.Subject, nil
}

// callbackLimiter is a token bucket on failed browser callbacks: a state has 256 random bits,
// so guessing is hopeless anyway, and this keeps an unauthenticated caller from making the
// plugin read storage at will.
type callbackLimiter struct {
	mu     sync.Mutex
	tokens float64
	at     time.Time
}

const (
	callbackBurst = 10
	// callbackRefill is the time one failed callback is allowed per, once the burst is spent.
	callbackRefill = 6 * time.Second
)

// allow reports whether a callback may be served now; fail takes a token for one that failed.
func (l *callbackLimiter) allow(now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.refill(now)
	return l.tokens >= 1
}

func (l *callbackLimiter) fail(now time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.refill(now)
	l.tokens = max(l.tokens-1, 0)
}

func (l *callbackLimiter) refill(now time.Time) {
	if l.at.IsZero() {
		l.tokens, l.at = callbackBurst, now
		return
	}
	if now.After(l.at) {
		l.tokens = min(l.tokens+float64(now.Sub(l.at))/float64(callbackRefill), callbackBurst)
		l.at = now
	}
}
