package oauth

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/vault/sdk/logical"

	"github.com/oauth-broker/vault-plugin-secrets-oauth/internal/oauthclient"
)

// entryCache keeps decoded storage entries so that a cache-hit read of creds touches neither
// storage nor the network. Writers update it after storage; invalidate drops entries that
// another node changed.
type entryCache struct {
	config cachedEntries[configEntry]
	roles  cachedEntries[roleEntry]
	tokens cachedEntries[tokenEntry]
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
	}
}

type providerClient struct {
	caPEM   string
	timeout time.Duration
	client  *oauthclient.Client
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

func putJSON(ctx context.Context, s logical.Storage, key string, v any) error {
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
