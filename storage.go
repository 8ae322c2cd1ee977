package oauth

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
	"github.com/oauth-broker/vault-plugin-secrets-oauth/internal/oauthclient"
)

// Storage layout (and keyPrefix). All hold secrets and are seal-wrapped.
const (
	configPath   = "config"
	rolePrefix   = "roles/"
	tokenPrefix  = "tokens/"
	backendTitle = "OAuth 2.0 token broker"
)

// entryCache keeps decoded storage entries so that a cache-hit read of creds touches neither
// storage nor the network. Writers update it after storage; invalidate drops entries that
// another node changed.
type entryCache struct {
	config cachedEntries[configEntry]
	roles  cachedEntries[roleEntry]
	tokens cachedEntries[tokenEntry]
	keys   cachedEntries[mountKey]
	// client is the HTTP client for one (ca_pem, timeout): a config write that changes neither
	// keeps its connections.
	client atomic.Pointer[providerClient]
	// bindings memoises each role's tokenBinding for the role and config entries it was
	// computed from, so the hot path does not hash the role on every read.
	bindings sync.Map // name -> *memoBinding
}

func newEntryCache() *entryCache {
	return &entryCache{
		config: cachedEntries[configEntry]{prefix: configPath},
		roles:  cachedEntries[roleEntry]{prefix: rolePrefix},
		tokens: cachedEntries[tokenEntry]{prefix: tokenPrefix},
		keys:   cachedEntries[mountKey]{prefix: keyPrefix},
	}
}

type providerClient struct {
	caPEM   string
	timeout time.Duration
	client  *oauthclient.Client
	// withCerts holds the clients that present a client certificate (mutual TLS), by the
	// certificate's digest: each has connections of its own.
	withCerts sync.Map // digest -> *oauthclient.Client
}

type memoBinding struct {
	role    *roleEntry
	cfg     *configEntry
	binding tokenBinding
}

// binding is bindingOf(role, cfg), computed once per pair of entries.
func (c *entryCache) binding(name string, role *roleEntry, cfg *configEntry) tokenBinding {
	if v, ok := c.bindings.Load(name); ok {
		if m := v.(*memoBinding); m.role == role && m.cfg == cfg {
			return m.binding
		}
	}
	bd := bindingOf(role, cfg)
	c.bindings.Store(name, &memoBinding{role: role, cfg: cfg, binding: bd})
	return bd
}

// cachedEntries caches the entries under one storage prefix. Each key has a generation that
// every local write and every invalidation bumps: an entry read from storage before a change is
// then not cached, so the cache never goes back to an entry older than storage.
type cachedEntries[T any] struct {
	prefix  string
	entries sync.Map // key -> *T

	mu          sync.Mutex
	generations map[string]uint64
}

func (c *cachedEntries[T]) generation(key string) uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.generations[key]
}

// set caches v as the entry a local write just stored.
func (c *cachedEntries[T]) set(key string, v *T) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.bump(key)
	c.entries.Store(key, v)
}

// drop forgets key: it was deleted, or changed elsewhere.
func (c *cachedEntries[T]) drop(key string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.bump(key)
	c.entries.Delete(key)
}

func (c *cachedEntries[T]) bump(key string) {
	if c.generations == nil {
		c.generations = map[string]uint64{}
	}
	c.generations[key]++
}

// load returns the cached entry for key, else reads it from storage and caches it unless the key
// changed meanwhile. It returns nil when storage has none.
func (c *cachedEntries[T]) load(ctx context.Context, s logical.Storage, key string) (*T, error) {
	if v, ok := c.entries.Load(key); ok {
		return v.(*T), nil
	}
	gen := c.generation(key)
	out, err := readEntry[T](ctx, s, c.prefix+key)
	if out == nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.generations[key] == gen {
		c.entries.Store(key, out)
	}
	return out, nil
}

// getJSON decodes the entry at key into out and reports whether one was there.
func getJSON(ctx context.Context, s logical.Storage, key string, out any) (bool, error) {
	entry, err := s.Get(ctx, key)
	if err != nil {
		return false, fmt.Errorf("reading %s: %w", key, err)
	}
	if entry == nil {
		return false, nil
	}
	if err := entry.DecodeJSON(out); err != nil {
		return false, fmt.Errorf("decoding %s: %w", key, err)
	}
	return true, nil
}

// storageFormat is the format of the entries this build writes. Entries written before formats
// were recorded (v0.1.0) read as format 0: their tokens carry no bindings and are served as the
// role's, which is what v0.1.0's role writes kept them.
const storageFormat = 1

// entryFormat records the storage format an entry was written in, for later migrations.
type entryFormat struct {
	Format int `json:"format,omitempty"`
}

func (f *entryFormat) stamp() { f.Format = storageFormat }

func putJSON(ctx context.Context, s logical.Storage, key string, v any) error {
	if entry, ok := v.(interface{ stamp() }); ok {
		entry.stamp()
	}
	buf, err := json.Marshal(v)
	if err != nil {
		return err
	}
	if err := s.Put(ctx, &logical.StorageEntry{Key: key, Value: buf, SealWrap: true}); err != nil {
		return fmt.Errorf("writing %s: %w", key, err)
	}
	return nil
}

// readEntry decodes the entry at key, or returns nil when there is none.
func readEntry[T any](ctx context.Context, s logical.Storage, key string) (*T, error) {
	out := new(T)
	found, err := getJSON(ctx, s, key, out)
	if err != nil || !found {
		return nil, err
	}
	return out, nil
}

// config returns the stored provider configuration, or nil when none is written.
func (b *backend) config(ctx context.Context, s logical.Storage) (*configEntry, error) {
	return b.cache.config.load(ctx, s, "")
}

// role returns the named role, or nil when there is none.
func (b *backend) role(ctx context.Context, s logical.Storage, name string) (*roleEntry, error) {
	return b.cache.roles.load(ctx, s, name)
}

// currentToken is the role's newest token: one storage refused, else the cached or stored one.
func (b *backend) currentToken(ctx context.Context, s logical.Storage, name string) (*tokenEntry, error) {
	if v, ok := b.unsaved.Load(name); ok {
		return v.(*tokenEntry), nil
	}
	return b.cache.tokens.load(ctx, s, name)
}

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
	// A chained role's binding takes its subject and actor tokens as their roles serve them now:
	// a token obtained with ones replaced meanwhile is not stored.
	return b.chainBinding(ctx, s, name, bindingOf(role, cfg), role, cfg, 0)
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
		return b.keepUnsaved(name, next, err)
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
		return b.keepUnsaved(name, tok, err)
	}
	b.unsaved.Delete(name)
	b.cache.tokens.set(name, tok)
	b.reschedule(ctx, s, name)
	return nil
}

// keepUnsaved keeps a token storage refused, marked with the failure so that the role's status
// tells the operator its (possibly rotated) refresh token exists only in memory until stored.
func (b *backend) keepUnsaved(name string, next *tokenEntry, cause error) error {
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
