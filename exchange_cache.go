package oauth

import (
	"container/list"
	"encoding/base64"
	"encoding/json"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/singleflight"
)

// Bounds of a mount's cache of exchange/ answers.
const (
	defaultExchangeEntries = 10000
	defaultExchangeBytes   = 32 << 20
	// exchangeEntryOverhead is what an entry costs besides its strings (list element, map slot).
	exchangeEntryOverhead = 256
)

// exchangeCache keeps the tokens exchange/ obtained, in memory only, keyed by a digest of the
// role, its binding, the subject token and its type. It is bounded by entries and bytes, the
// least recently used going first; concurrent requests for one key share one exchange.
type exchangeCache struct {
	flights singleflight.Group

	mu                   sync.Mutex
	maxEntries, maxBytes int
	bytes                int
	lru                  *list.List // of *exchanged, most recently used first
	entries              map[string]*list.Element
	// generation changes with every clear: an exchange started before one is not cached.
	generation uint64
}

type exchanged struct {
	key string
	tok *tokenEntry
	// until is when the entry stops being served: the token's refresh threshold, or the
	// subject token's own expiry when that comes first.
	until time.Time
	size  int
}

func newExchangeCache(maxEntries, maxBytes int) *exchangeCache {
	return &exchangeCache{maxEntries: maxEntries, maxBytes: maxBytes, lru: list.New(), entries: map[string]*list.Element{}}
}

// get returns the token cached for key, unless it is due for replacement at now.
func (c *exchangeCache) get(key string, now time.Time) *tokenEntry {
	c.mu.Lock()
	defer c.mu.Unlock()
	el, ok := c.entries[key]
	if !ok {
		return nil
	}
	e := el.Value.(*exchanged)
	if !now.Before(e.until) {
		c.removeLocked(el)
		return nil
	}
	c.lru.MoveToFront(el)
	return e.tok
}

// current is the generation to pass to put.
func (c *exchangeCache) current() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.generation
}

// put caches tok for key until until, unless the cache was cleared since generation gen.
func (c *exchangeCache) put(key string, tok *tokenEntry, until time.Time, gen uint64) {
	size := exchangeEntryOverhead + len(key) + len(tok.AccessToken) + len(tok.IDToken) + len(tok.Scope) + len(tok.TokenType) + len(tok.IssuedType)
	c.mu.Lock()
	defer c.mu.Unlock()
	if gen != c.generation || size > c.maxBytes || c.maxEntries < 1 {
		return
	}
	if el, ok := c.entries[key]; ok {
		c.removeLocked(el)
	}
	c.entries[key] = c.lru.PushFront(&exchanged{key: key, tok: tok, until: until, size: size})
	c.bytes += size
	for len(c.entries) > c.maxEntries || c.bytes > c.maxBytes {
		c.removeLocked(c.lru.Back())
	}
}

func (c *exchangeCache) removeLocked(el *list.Element) {
	e := c.lru.Remove(el).(*exchanged)
	delete(c.entries, e.key)
	c.bytes -= e.size
}

// clear drops every entry: a role or the config changed, or the mount is going away.
func (c *exchangeCache) clear() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.generation++
	clear(c.entries)
	c.lru.Init()
	c.bytes = 0
}

// len is the number of entries and their estimated bytes.
func (c *exchangeCache) len() (entries, bytes int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.entries), c.bytes
}

// jwtExpiry reads the exp claim of a token that is a JWS in compact form, without verifying it:
// it only shortens how long an exchange of that token is cached.
func jwtExpiry(token string) (time.Time, bool) {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return time.Time{}, false
	}
	payload, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(parts[1], "="))
	if err != nil {
		return time.Time{}, false
	}
	var claims struct {
		Exp json.Number `json:"exp"`
	}
	if json.Unmarshal(payload, &claims) != nil {
		return time.Time{}, false
	}
	exp, err := claims.Exp.Float64()
	if err != nil || exp <= 0 || exp > 1<<40 {
		return time.Time{}, false
	}
	return time.Unix(int64(exp), 0), true
}
