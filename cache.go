package oauth

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/hashicorp/vault/sdk/logical"

	"github.com/oauth-broker/vault-plugin-secrets-oauth/internal/oauthclient"
)

// entryCache keeps decoded storage entries so that a cache-hit read of creds touches neither
// storage nor the network. Writers update it after storage; invalidate drops entries that
// another node changed.
type entryCache struct {
	config atomic.Pointer[configEntry]
	// client is built from config (TLS roots, timeout) and dropped with it.
	client atomic.Pointer[oauthclient.Client]
	roles  sync.Map // name -> *roleEntry
	tokens sync.Map // name -> *tokenEntry
}

func (c *entryCache) dropConfig() {
	c.config.Store(nil)
	c.client.Store(nil)
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

// loadCached returns the cached entry for name, else reads it from storage under the role's
// read lock (so it cannot overwrite a newer entry a writer just cached) and caches it.
func loadCached[T any](ctx context.Context, b *backend, m *sync.Map, s logical.Storage, prefix, name string) (*T, error) {
	if v, ok := m.Load(name); ok {
		return v.(*T), nil
	}
	lock := b.roleLock(name)
	lock.RLock()
	defer lock.RUnlock()
	out, err := readEntry[T](ctx, s, prefix+name)
	if out != nil {
		m.Store(name, out)
	}
	return out, err
}

// peekCached is loadCached without the lock and without filling the cache, for callers that
// may already hold the role's lock.
func peekCached[T any](ctx context.Context, m *sync.Map, s logical.Storage, prefix, name string) (*T, error) {
	if v, ok := m.Load(name); ok {
		return v.(*T), nil
	}
	return readEntry[T](ctx, s, prefix+name)
}
