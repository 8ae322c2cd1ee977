package oauth

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"

	"github.com/oauth-broker/vault-plugin-secrets-oauth/internal/oauthclient"
	"github.com/oauth-broker/vault-plugin-secrets-oauth/internal/testprovider"
)

// faultyStorage wraps storage, counts operations and fails them on demand.
type faultyStorage struct {
	logical.Storage
	gets, puts atomic.Int64
	tokenReads atomic.Int64
	mu         sync.Mutex
	failPut    func(key string) bool
	failGet    func(key string) bool
	// onGet and onList, when set, run as the operation reaches storage (Get) or after storage
	// answered (List), to interleave another writer at that moment.
	onGet  func(key string)
	onList func()
}

var errInjected = errors.New("injected storage failure")

func (s *faultyStorage) Get(ctx context.Context, key string) (*logical.StorageEntry, error) {
	s.gets.Add(1)
	if strings.HasPrefix(key, tokenPrefix) {
		s.tokenReads.Add(1)
	}
	s.mu.Lock()
	fail := s.failGet != nil && s.failGet(key)
	s.mu.Unlock()
	if fail {
		return nil, errInjected
	}
	if s.onGet != nil {
		s.onGet(key)
	}
	return s.Storage.Get(ctx, key)
}

func (s *faultyStorage) List(ctx context.Context, prefix string) ([]string, error) {
	keys, err := s.Storage.List(ctx, prefix)
	if s.onList != nil {
		s.onList()
	}
	return keys, err
}

func (s *faultyStorage) Put(ctx context.Context, e *logical.StorageEntry) error {
	s.puts.Add(1)
	s.mu.Lock()
	fail := s.failPut != nil && s.failPut(e.Key)
	s.mu.Unlock()
	if fail {
		return errInjected
	}
	return s.Storage.Put(ctx, e)
}

// tokenGets is how many reads of a tokens/ entry storage served.
func (s *faultyStorage) tokenGets() int64 { return s.tokenReads.Load() }

func (s *faultyStorage) setFailPut(f func(string) bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failPut = f
}

// snapshot returns every key and value in storage.
func (s *faultyStorage) snapshot(t testing.TB) map[string]string {
	t.Helper()
	out := map[string]string{}
	keys, err := logical.CollectKeys(context.Background(), s.Storage)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		e, err := s.Storage.Get(context.Background(), k)
		if err != nil {
			t.Fatal(err)
		}
		out[k] = string(e.Value)
	}
	return out
}

func newTestBackend(t testing.TB) (*backend, *faultyStorage) {
	t.Helper()
	storage := &faultyStorage{Storage: &logical.InmemStorage{}}
	conf := logical.TestBackendConfig()
	conf.StorageView = storage
	b := newBackend(&testClock{}, oauthclient.NewClient)
	if err := b.Setup(context.Background(), conf); err != nil {
		t.Fatal(err)
	}
	return b, storage
}

// testClock is the clock of test backends: real time plus an offset the test moves, or, once
// pinned, a moment the test advances.
type testClock struct {
	mu     sync.Mutex
	offset time.Duration
	pinned time.Time
	timers []*testTimer
}

func (c *testClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now()
}

func (c *testClock) now() time.Time {
	if !c.pinned.IsZero() {
		return c.pinned
	}
	return time.Now().Add(c.offset)
}

// testTimer fires only when the test moves the clock past it (Advance, Shift), on the test's
// goroutine: what it runs has finished when the move returns.
type testTimer struct {
	c       *testClock
	at      time.Time
	f       func()
	stopped bool
}

func (t *testTimer) Stop() bool {
	t.c.mu.Lock()
	defer t.c.mu.Unlock()
	was := !t.stopped
	t.stopped = true
	return was
}

func (c *testClock) AfterFunc(d time.Duration, f func()) stopper {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := &testTimer{c: c, at: c.now().Add(d), f: f}
	c.timers = append(c.timers, t)
	return t
}

// fire runs the timers due now, earliest first, including those they set that are due too.
func (c *testClock) fire() {
	for {
		c.mu.Lock()
		var next *testTimer
		for _, t := range c.timers {
			if !t.stopped && !t.at.After(c.now()) && (next == nil || t.at.Before(next.at)) {
				next = t
			}
		}
		if next != nil {
			next.stopped = true
		}
		c.timers = slices.DeleteFunc(c.timers, func(t *testTimer) bool { return t.stopped })
		c.mu.Unlock()
		if next == nil {
			return
		}
		next.f()
	}
}

// Shift makes the clock read real time plus d.
func (c *testClock) Shift(d time.Duration) {
	c.mu.Lock()
	c.offset, c.pinned = d, time.Time{}
	c.mu.Unlock()
	c.fire()
}

// Pin stops the clock at t.
func (c *testClock) Pin(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.pinned = t.UTC()
}

// Advance moves a pinned clock forward.
func (c *testClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.pinned = c.pinned.Add(d)
	c.mu.Unlock()
	c.fire()
}

func clockOf(b *backend) *testClock { return b.clock.(*testClock) }

// request performs an operation and fails the test on an internal error.
func request(t testing.TB, b *backend, s logical.Storage, op logical.Operation, path string, data map[string]any) *logical.Response {
	t.Helper()
	resp, err := requestErr(b, s, op, path, data)
	if err != nil {
		t.Fatalf("%s %s: %v", op, path, err)
	}
	return resp
}

func requestErr(b *backend, s logical.Storage, op logical.Operation, path string, data map[string]any) (*logical.Response, error) {
	return b.HandleRequest(context.Background(), &logical.Request{Operation: op, Path: path, Data: data, Storage: s})
}

// mustSucceed fails the test when resp is an error response.
func mustSucceed(t testing.TB, resp *logical.Response) *logical.Response {
	t.Helper()
	if resp != nil && resp.IsError() {
		t.Fatalf("unexpected error response: %v", resp.Error())
	}
	return resp
}

// mustFailNaming asserts a 400-style error response whose message names field.
func mustFailNaming(t testing.TB, resp *logical.Response, field string) {
	t.Helper()
	if resp == nil || !resp.IsError() {
		t.Fatalf("expected an error naming %q, got %#v", field, resp)
	}
	if msg := resp.Error().Error(); !strings.Contains(msg, field) {
		t.Fatalf("error %q does not name %q", msg, field)
	}
}

const (
	testClientID     = "app-client"
	testClientSecret = "app-client-secret-0123456789abcdef0123456789"
)

// newProviderWithClient starts a provider with one client_secret_basic client.
func newProviderWithClient(t testing.TB) *testprovider.Provider {
	p := testprovider.New(t)
	p.AddClient(&testprovider.Client{ID: testClientID, Secret: testClientSecret, AuthMethod: "client_secret_basic"})
	return p
}

// configured returns a backend configured against p with role "app" (client_credentials).
func configured(t testing.TB, p *testprovider.Provider) (*backend, *faultyStorage) {
	t.Helper()
	b, s := newTestBackend(t)
	mustSucceed(t, request(t, b, s, logical.UpdateOperation, "config", map[string]any{
		"token_url": p.TokenURL(), "client_id": testClientID, "client_secret": testClientSecret,
	}))
	mustSucceed(t, request(t, b, s, logical.UpdateOperation, "roles/app", map[string]any{"scopes": "read,write"}))
	return b, s
}

func readCreds(t testing.TB, b *backend, s logical.Storage, role string, data map[string]any) *logical.Response {
	t.Helper()
	return mustSucceed(t, request(t, b, s, logical.ReadOperation, "creds/"+role, data))
}

// refreshTokenRole configures role "app" for the refresh_token grant, importing a refresh token
// the provider issues for subject "bob" with scope; extra role fields are added. It returns the
// imported refresh token.
func refreshTokenRole(t testing.TB, p *testprovider.Provider, scope string, extra map[string]any) (*backend, *faultyStorage, string) {
	t.Helper()
	imported := p.IssueRefreshToken(testClientID, "bob", scope)
	role := map[string]any{
		"grant_type": "refresh_token", "client_id": testClientID, "client_secret": testClientSecret,
		"refresh_token": imported,
	}
	for k, v := range extra {
		role[k] = v
	}
	b, s := configuredWith(t, p, role)
	return b, s, imported
}

// backendForClient starts a provider with client (its ID derived from name) and a backend whose
// role "app" uses that client with the given role fields. It returns the client's ID.
func backendForClient(t *testing.T, name string, client testprovider.Client, role map[string]any) (*testprovider.Provider, *backend, *faultyStorage, string) {
	t.Helper()
	p := testprovider.New(t)
	client.ID = strings.ReplaceAll(name, " ", "-")
	p.AddClient(&client)
	role["client_id"] = client.ID
	b, s := configuredWith(t, p, role)
	return p, b, s, client.ID
}
