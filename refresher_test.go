package oauth

import (
	"context"
	"fmt"
	"math"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/helper/consts"
	"github.com/hashicorp/vault/sdk/logical"

	"github.com/oauth-broker/vault-plugin-secrets-oauth/internal/oauthclient"
	"github.com/oauth-broker/vault-plugin-secrets-oauth/internal/testprovider"
)

// refreshEnv is a backend on a fake clock against a provider that sends no expires_in, so that
// each role's default_ttl is its tokens' lifetime.
type refreshEnv struct {
	b     *backend
	s     *faultyStorage
	p     *testprovider.Provider
	clock *testClock
	// fail, when set, answers token requests instead of the provider.
	fail atomic.Pointer[func(http.ResponseWriter)]
}

func newRefreshEnv(t testing.TB, maxConcurrent int) *refreshEnv {
	t.Helper()
	e := &refreshEnv{p: newProviderWithClient(t)}
	e.p.TokenTTL = 0
	e.p.Intercept = func(w http.ResponseWriter, _ *http.Request) bool {
		if f := e.fail.Load(); f != nil {
			(*f)(w)
			return true
		}
		return false
	}
	e.b, e.s = newTestBackend(t)
	e.clock = clockOf(e.b)
	// Real time, so that what the provider checks against its own clock (assertions) holds.
	e.clock.Pin(time.Now().Truncate(time.Minute))
	mustSucceed(t, request(t, e.b, e.s, logical.UpdateOperation, "config", map[string]any{
		"token_url": e.p.TokenURL(), "client_id": testClientID, "client_secret": testClientSecret,
		"max_concurrent_refreshes": maxConcurrent, "revocation_url": e.p.URL + "/revoke",
	}))
	initialize(t, e.b, e.s)
	return e
}

func initialize(t testing.TB, b *backend, s logical.Storage) {
	t.Helper()
	if err := b.Initialize(context.Background(), &logical.InitializationRequest{Storage: s}); err != nil {
		t.Fatal(err)
	}
	// The refresh pass it starts is part of what initializing does.
	b.refresher.passes.Wait()
}

// failWith makes the provider answer every token request with status and headers; nil heals it.
func (e *refreshEnv) failWith(status int, header map[string]string) {
	if status == 0 {
		e.fail.Store(nil)
		return
	}
	f := func(w http.ResponseWriter) {
		for k, v := range header {
			w.Header().Set(k, v)
		}
		writeProviderError(w, status)
	}
	e.fail.Store(&f)
}

func writeProviderError(w http.ResponseWriter, status int) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write([]byte(`{"error":"temporarily_unavailable","error_description":"try later"}`))
}

func (e *refreshEnv) addRole(t testing.TB, name string, data map[string]any) {
	t.Helper()
	mustSucceed(t, request(t, e.b, e.s, logical.UpdateOperation, "roles/"+name, data))
}

// tick is one call of PeriodicFunc, as Vault's rollback manager makes it.
func (e *refreshEnv) tick(t testing.TB) {
	t.Helper()
	tick(t, e.b, e.s)
}

func tick(t testing.TB, b *backend, s logical.Storage) {
	t.Helper()
	if _, err := b.HandleRequest(context.Background(), &logical.Request{Operation: logical.RollbackOperation, Storage: s}); err != nil {
		t.Fatalf("periodic func: %v", err)
	}
}

func (e *refreshEnv) token(t testing.TB, name string) *tokenEntry {
	t.Helper()
	tok, err := e.b.currentToken(context.Background(), e.s, name)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// threshold is the role's refresh threshold for tok, as reads apply it.
func (e *refreshEnv) threshold(t testing.TB, name string, tok *tokenEntry) time.Duration {
	t.Helper()
	role, err := e.b.role(context.Background(), e.s, name)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := e.b.config(context.Background(), e.s)
	if err != nil {
		t.Fatal(err)
	}
	return refreshThreshold(effectivePolicy(role, cfg), tok.lifetime())
}

// queued reports the role's queue priority, leaving the queue as it was.
func queued(b *backend, name string) (int64, bool) {
	q := b.refresher.current()
	q.mu.Lock()
	defer q.mu.Unlock()
	item, _ := q.pq.PopByKey(name)
	if item == nil {
		return 0, false
	}
	_ = q.pq.Push(item)
	return item.Priority, true
}

// queueSnapshot is every queue entry, leaving the queue as it was.
func queueSnapshot(b *backend) map[string]int64 {
	q := b.refresher.current()
	out := map[string]int64{}
	for _, item := range q.popDue(math.MaxInt64) {
		out[item.Key] = item.Priority
	}
	for name, priority := range out {
		q.set(name, priority)
	}
	return out
}

var t0 = time.Date(2030, 1, 1, 12, 0, 0, 0, time.UTC)

func TestPlanRefreshSchedulesBeforeThresholdWithJitter(t *testing.T) {
	policy := refreshPolicy{RefreshFraction: 0.5}
	tok := &tokenEntry{AccessToken: "a", ObtainedAt: t0, ExpiresAt: t0.Add(time.Hour)}
	plan := planRefresh("app", tok, policy)
	th := 30 * time.Minute
	// Jitter: up to 20% of the 30m window, so at most 6m earlier than the threshold.
	if plan.lead < th || plan.lead >= th+6*time.Minute {
		t.Fatalf("lead %s, want in [30m, 36m)", plan.lead)
	}
	if want := tok.ExpiresAt.Add(-plan.lead - refreshHorizon); !plan.at.Equal(want) {
		t.Fatalf("at %s, want %s: the last tick before the token falls to lead", plan.at, want)
	}
	if again := planRefresh("app", tok, policy); again != plan {
		t.Fatal("the plan must depend only on its inputs")
	}

	if plan := planRefresh("app", nil, policy); !plan.at.IsZero() || plan.onRead {
		t.Fatalf("a role without a token is due at once: %+v", plan)
	}
	if plan := planRefresh("app", &tokenEntry{RefreshToken: "r"}, policy); !plan.at.IsZero() || plan.onRead {
		t.Fatalf("a role with only a refresh token is due at once: %+v", plan)
	}
	short := &tokenEntry{AccessToken: "a", ObtainedAt: t0, ExpiresAt: t0.Add(50 * time.Second)}
	if plan := planRefresh("app", short, policy); !plan.onRead || plan.priority() != math.MaxInt64 {
		t.Fatalf("a 50s token lives less than a tick and is left to reads: %+v", plan)
	}
	narrow := &tokenEntry{AccessToken: "a", ObtainedAt: t0, ExpiresAt: t0.Add(110 * time.Second)}
	if plan := planRefresh("app", narrow, policy); plan.onRead || plan.at.After(t0.Add(refreshTick)) {
		t.Fatalf("a 1m50s token would expire before the next tick but one: the next tick replaces it: %+v", plan)
	}

	// refresh_buffer beats the fraction when it is larger.
	buffered := planRefresh("app", tok, refreshPolicy{RefreshBuffer: 40 * time.Minute, RefreshFraction: 0.5})
	if buffered.lead < 40*time.Minute || buffered.lead >= 42*time.Minute {
		t.Fatalf("with a 40m buffer lead is %s, want in [40m, 42m)", buffered.lead)
	}
}

func TestPlanRefreshSpreadsRolesObtainedTogether(t *testing.T) {
	perMinute := map[int64]int{}
	for i := range 1000 {
		tok := &tokenEntry{AccessToken: "a", ObtainedAt: t0, ExpiresAt: t0.Add(time.Hour)}
		plan := planRefresh(fmt.Sprintf("role-%d", i), tok, refreshPolicy{RefreshFraction: 0.5})
		perMinute[plan.at.Unix()/60]++
	}
	busiest := 0
	for _, n := range perMinute {
		busiest = max(busiest, n)
	}
	if len(perMinute) < 6 || busiest > 250 {
		t.Fatalf("1000 tokens obtained together come due over %d ticks, at most %d in one: want them spread over 6", len(perMinute), busiest)
	}
}

func TestPlanRefreshBacksOff(t *testing.T) {
	// An expired token, so only the retry decides.
	tok := &tokenEntry{AccessToken: "a", ObtainedAt: t0.Add(-2 * time.Hour), ExpiresAt: t0.Add(-time.Hour), LastErrorAt: t0}
	prevCeiling := time.Duration(0)
	for n := 1; n <= 8; n++ {
		tok.ConsecutiveFailures = n
		ceiling := min(time.Minute<<(n-1), maxBackoff)
		wait := planRefresh("app", tok, refreshPolicy{RefreshFraction: 0.5}).at.Sub(t0)
		if wait < ceiling/2 || wait >= ceiling {
			t.Fatalf("after %d failures the retry waits %s, want in [%s, %s)", n, wait, ceiling/2, ceiling)
		}
		if ceiling < prevCeiling {
			t.Fatal("backoff must not shrink")
		}
		prevCeiling = ceiling
	}

	tok.RetryAt = t0.Add(25 * time.Minute)
	if at := planRefresh("app", tok, refreshPolicy{RefreshFraction: 0.5}).at; !at.Equal(tok.RetryAt) {
		t.Fatalf("Retry-After must hold the retry back to %s, got %s", tok.RetryAt, at)
	}

	// A failure while the token is fresh (a failed rotate) does not bring the refresh forward.
	fresh := &tokenEntry{AccessToken: "a", ObtainedAt: t0, ExpiresAt: t0.Add(time.Hour), LastErrorAt: t0, ConsecutiveFailures: 1}
	normal := planRefresh("app", &tokenEntry{AccessToken: "a", ObtainedAt: t0, ExpiresAt: t0.Add(time.Hour)}, refreshPolicy{RefreshFraction: 0.5})
	if got := planRefresh("app", fresh, refreshPolicy{RefreshFraction: 0.5}); got.at != normal.at {
		t.Fatalf("a failure before the refresh is due moved it from %s to %s", normal.at, got.at)
	}
}

// TestRefresherKeepsThousandRolesAheadOfThreshold drives 1,000 roles with lifetimes from 3
// minutes to 3 hours through three simulated hours: after every tick, every token has more than
// its threshold left until the next tick, so no read in between waits for the provider.
func TestRefresherKeepsThousandRolesAheadOfThreshold(t *testing.T) {
	const roles, limit = 1000, 4
	e := newRefreshEnv(t, limit)
	for i := range roles {
		data := map[string]any{"default_ttl": 180 + (i*7919)%(3*3600-180)}
		switch i % 5 {
		case 1:
			data["refresh_buffer"] = "10m"
		case 2:
			data["refresh_fraction"] = 0.2
		}
		e.addRole(t, fmt.Sprintf("role-%04d", i), data)
	}

	start := e.clock.Now()
	for minute := 0; minute <= 180; minute++ {
		e.tick(t)
		next := e.clock.Now().Add(refreshTick)
		narrowWindow := 0
		for i := range roles {
			name := fmt.Sprintf("role-%04d", i)
			tok := e.token(t, name)
			th := e.threshold(t, name, tok)
			if tok.lifetime()-th < refreshHorizon {
				// A refresh window shorter than a tick: replaced at every tick, so reads may
				// have to refresh it, but it never expires between ticks.
				if tok.remaining(next) <= 0 {
					t.Fatalf("minute %d: %s (%s refresh window) expires before the next tick", minute, name, tok.lifetime()-th)
				}
				narrowWindow++
				continue
			}
			if tok.remaining(next) <= th {
				t.Fatalf("minute %d: %s has %s left at the next tick, not more than its threshold %s", minute, name, tok.remaining(next), th)
			}
		}
		if narrowWindow > roles/50 {
			t.Fatalf("%d roles have a refresh window under a tick", narrowWindow)
		}
		if minute%30 == 29 {
			// Just before the next tick, reads of any role are answered from the cache.
			e.clock.Advance(refreshTick - time.Second)
			before := e.p.Requests()
			for i := 0; i < roles; i += 37 {
				readCreds(t, e.b, e.s, fmt.Sprintf("role-%04d", i), nil)
			}
			if e.p.Requests() != before {
				t.Fatalf("minute %d: reads called the provider %d times", minute, e.p.Requests()-before)
			}
			e.clock.Advance(time.Second)
			continue
		}
		e.clock.Advance(refreshTick)
	}

	if peak := e.p.PeakConcurrency(); peak > limit {
		t.Fatalf("the provider saw %d concurrent requests; max_concurrent_refreshes is %d", peak, limit)
	}
	// Not early either: each role was refreshed about once per (lifetime − lead).
	elapsed := e.clock.Now().Sub(start)
	for i := range roles {
		name := fmt.Sprintf("role-%04d", i)
		tok := e.token(t, name)
		life := tok.lifetime()
		th := e.threshold(t, name, tok)
		leadMax := th + min(time.Duration(float64(life-th)*jitterShare), maxJitter)
		interval := max(refreshTick, life-leadMax-refreshHorizon)
		if bound := 2 + int64(elapsed/interval); tok.Grants > bound {
			t.Fatalf("%s (lifetime %s) was granted %d tokens in %s, more than %d", name, life, tok.Grants, elapsed, bound)
		}
	}
}

// TestRefresherConcurrencyReachesButNeverExceedsLimit holds requests at the provider until
// max_concurrent_refreshes of them are open together, wave after wave.
func TestRefresherConcurrencyReachesButNeverExceedsLimit(t *testing.T) {
	const roles, limit = 24, 3
	e := newRefreshEnv(t, limit)
	for i := range roles {
		e.addRole(t, fmt.Sprintf("r%d", i), map[string]any{"default_ttl": "1h"})
	}
	var mu sync.Mutex
	waiting, gate := 0, make(chan struct{})
	e.p.Intercept = func(http.ResponseWriter, *http.Request) bool {
		mu.Lock()
		g := gate
		if waiting++; waiting == limit {
			close(gate)
			waiting, gate = 0, make(chan struct{})
		}
		mu.Unlock()
		select {
		case <-g:
		case <-time.After(10 * time.Second):
			t.Error("fewer than max_concurrent_refreshes requests were ever open together")
		}
		return false
	}
	e.tick(t)
	if peak := e.p.PeakConcurrency(); peak != limit {
		t.Fatalf("peak concurrency %d, want exactly %d", peak, limit)
	}
	for i := range roles {
		if tok := e.token(t, fmt.Sprintf("r%d", i)); tok.remaining(e.clock.Now()) == 0 {
			t.Fatalf("r%d has no token after the tick", i)
		}
	}
}

// TestRefresherBacksOffAndKeepsToken fails every request for three hours: attempts back off
// exponentially up to the cap, the cached token is never touched and the role never leaves the
// queue; when the provider heals, the role is refreshed and its failure count reset.
func TestRefresherBacksOffAndKeepsToken(t *testing.T) {
	e := newRefreshEnv(t, 2)
	e.addRole(t, "app", map[string]any{"default_ttl": "1h"})
	e.tick(t)
	original := *e.token(t, "app")
	e.failWith(http.StatusInternalServerError, nil)

	var attempts []time.Time
	for range 180 {
		e.clock.Advance(refreshTick)
		before := e.p.Requests()
		e.tick(t)
		if n := e.p.Requests() - before; n > 1 {
			t.Fatalf("one tick sent %d requests for one role", n)
		} else if n == 1 {
			attempts = append(attempts, e.clock.Now())
		}
		tok := e.token(t, "app")
		if tok.AccessToken != original.AccessToken || !tok.ExpiresAt.Equal(original.ExpiresAt) {
			t.Fatal("a failed refresh changed the cached token")
		}
		if tok.ConsecutiveFailures != len(attempts) {
			t.Fatalf("consecutive_failures %d after %d failed attempts", tok.ConsecutiveFailures, len(attempts))
		}
		if _, ok := queued(e.b, "app"); !ok {
			t.Fatal("a failing role left the queue")
		}
	}
	if len(attempts) < 10 {
		t.Fatalf("only %d attempts in three hours", len(attempts))
	}
	for k := 1; k < len(attempts); k++ {
		ceiling := min(backoffBase<<(k-1), maxBackoff)
		if gap := attempts[k].Sub(attempts[k-1]); gap < ceiling/2 || gap >= ceiling+refreshTick {
			t.Fatalf("gap after failure %d is %s, want in [%s, %s]", k, gap, ceiling/2, ceiling+refreshTick)
		}
	}
	if status := readStatus(t, e.b, e.s, "app"); !strings.Contains(status["last_error"].(string), "HTTP 500") {
		t.Fatalf("status does not report the failure: %v", status)
	}

	e.failWith(0, nil)
	for range int(maxBackoff/refreshTick) + 1 {
		e.clock.Advance(refreshTick)
		e.tick(t)
	}
	tok := e.token(t, "app")
	if tok.AccessToken == original.AccessToken || tok.ConsecutiveFailures != 0 || tok.Failures != int64(len(attempts)) {
		t.Fatalf("after the provider healed: new token %v, consecutive failures %d, failures %d (want %d)",
			tok.AccessToken != original.AccessToken, tok.ConsecutiveFailures, tok.Failures, len(attempts))
	}
}

func TestRefresherHonoursRetryAfter(t *testing.T) {
	for _, status := range []int{http.StatusTooManyRequests, http.StatusServiceUnavailable} {
		t.Run(http.StatusText(status), func(t *testing.T) {
			e := newRefreshEnv(t, 2)
			e.addRole(t, "app", map[string]any{"default_ttl": "1h"})
			e.failWith(status, map[string]string{"Retry-After": "1200"})
			e.tick(t)
			if e.p.Requests() != 1 {
				t.Fatalf("first tick sent %d requests", e.p.Requests())
			}
			failedAt := e.clock.Now()
			e.failWith(0, nil)
			for e.p.Requests() == 1 {
				e.clock.Advance(refreshTick)
				e.tick(t)
				if e.clock.Now().Sub(failedAt) > time.Hour {
					t.Fatal("no retry within an hour")
				}
			}
			if wait := e.clock.Now().Sub(failedAt); wait != 20*time.Minute {
				t.Fatalf("retried after %s; Retry-After asked for 20m", wait)
			}
			if tok := e.token(t, "app"); tok.AccessToken == "" || tok.ConsecutiveFailures != 0 {
				t.Fatalf("the retry should have obtained a token: %+v", tok.ConsecutiveFailures)
			}
		})
	}
}

// TestRefreshQueueRebuiltIdenticallyAfterRestart compares the queue a running backend holds with
// the one a new backend builds from the same storage: healthy roles, failing ones in backoff,
// short-lived ones left to reads.
func TestRefreshQueueRebuiltIdenticallyAfterRestart(t *testing.T) {
	e := newRefreshEnv(t, 4)
	for i := range 200 {
		e.addRole(t, fmt.Sprintf("role-%03d", i), map[string]any{"default_ttl": 180 + (i*7919)%7200})
	}
	e.addRole(t, "short", map[string]any{"default_ttl": "30s"})
	e.addRole(t, "failing", map[string]any{"client_secret": "not-the-registered-secret"})
	for range 90 {
		e.tick(t)
		e.clock.Advance(refreshTick)
	}
	e.tick(t)
	before := queueSnapshot(e.b)
	if len(before) != 202 {
		t.Fatalf("queue holds %d roles, want 202", len(before))
	}
	if before["short"] != math.MaxInt64 {
		t.Fatal("the short-lived role should be left to reads")
	}
	if tok := e.token(t, "failing"); tok.ConsecutiveFailures < 3 {
		t.Fatalf("the failing role should be in backoff, has %d failures", tok.ConsecutiveFailures)
	}

	restarted := newBackend(e.clock, oauthclient.NewClient)
	conf := logical.TestBackendConfig()
	conf.StorageView = e.s
	if err := restarted.Setup(context.Background(), conf); err != nil {
		t.Fatal(err)
	}
	initialize(t, restarted, e.s)
	after := queueSnapshot(restarted)
	if len(after) != len(before) {
		t.Fatalf("rebuilt queue holds %d roles, the running one %d", len(after), len(before))
	}
	for name, p := range before {
		if after[name] != p {
			t.Fatalf("%s: rebuilt at %d, was %d", name, after[name], p)
		}
	}
}

func TestRefresherFollowsRoleWritesAndDeletes(t *testing.T) {
	e := newRefreshEnv(t, 2)
	e.addRole(t, "app", map[string]any{"default_ttl": "1h"})
	if p, ok := queued(e.b, "app"); !ok || p > e.clock.Now().UnixMilli() {
		t.Fatal("a new role should be queued for the next tick")
	}
	e.tick(t)
	tok := e.token(t, "app")
	scheduled, _ := queued(e.b, "app")
	if want := planRefresh("app", tok, refreshPolicy{RefreshFraction: 0.5}).priority(); scheduled != want {
		t.Fatalf("after the grant the role is queued at %d, want %d", scheduled, want)
	}

	e.addRole(t, "app", map[string]any{"refresh_fraction": 0.8})
	if p, _ := queued(e.b, "app"); p >= scheduled {
		t.Fatal("a larger refresh_fraction should bring the refresh forward")
	}
	e.addRole(t, "app", map[string]any{"scopes": "other"})
	if p, _ := queued(e.b, "app"); p > e.clock.Now().UnixMilli() {
		t.Fatal("a role whose grant changed (token dropped) should be due at the next tick")
	}
	mustSucceed(t, request(t, e.b, e.s, logical.DeleteOperation, "roles/app", nil))
	if _, ok := queued(e.b, "app"); ok {
		t.Fatal("a deleted role stays in the queue")
	}
	before := e.p.Requests()
	e.tick(t)
	if e.p.Requests() != before {
		t.Fatal("a deleted role was refreshed")
	}
}

func TestRefresherReadsRefreshTheQueue(t *testing.T) {
	e := newRefreshEnv(t, 2)
	e.addRole(t, "app", map[string]any{"default_ttl": "1h"})
	readCreds(t, e.b, e.s, "app", nil)
	want := planRefresh("app", e.token(t, "app"), refreshPolicy{RefreshFraction: 0.5}).priority()
	if p, _ := queued(e.b, "app"); p != want {
		t.Fatalf("a token obtained by a read should reschedule the role to %d, got %d", want, p)
	}
	before := e.p.Requests()
	e.tick(t)
	if e.p.Requests() != before {
		t.Fatal("the refresher replaced a token a read had just obtained")
	}
}

func TestInvalidateRechecksRole(t *testing.T) {
	e := newRefreshEnv(t, 2)
	e.addRole(t, "app", map[string]any{"default_ttl": "1h"})
	e.tick(t)
	planned, _ := queued(e.b, "app")

	// Another node wrote the token: look again at the next tick, without a grant if not due.
	e.b.InvalidateKey(context.Background(), tokenPrefix+"app")
	if p, _ := queued(e.b, "app"); p > e.clock.Now().UnixMilli() {
		t.Fatal("an invalidated role should be looked at by the next tick")
	}
	before := e.p.Requests()
	e.tick(t)
	if e.p.Requests() != before {
		t.Fatal("a recheck of a fresh token called the provider")
	}
	if p, _ := queued(e.b, "app"); p != planned {
		t.Fatalf("after the recheck the role is queued at %d, want %d", p, planned)
	}

	// A recheck does not cut a backoff short.
	e.failWith(http.StatusInternalServerError, nil)
	e.clock.Advance(time.Duration(planned-e.clock.Now().UnixMilli()) * time.Millisecond)
	e.tick(t)
	failures := e.p.Requests()
	if tok := e.token(t, "app"); tok.ConsecutiveFailures != 1 {
		t.Fatalf("precondition: one failed refresh, got %d", tok.ConsecutiveFailures)
	}
	e.b.InvalidateKey(context.Background(), tokenPrefix+"app")
	e.tick(t)
	if e.p.Requests() != failures {
		t.Fatal("a recheck retried a failing role before its backoff ended")
	}
	e.failWith(0, nil)

	// Another node deleted the role.
	for _, key := range []string{tokenPrefix + "app", rolePrefix + "app"} {
		if err := e.s.Delete(context.Background(), key); err != nil {
			t.Fatal(err)
		}
	}
	e.b.InvalidateKey(context.Background(), rolePrefix+"app")
	e.tick(t)
	if _, ok := queued(e.b, "app"); ok {
		t.Fatal("a role deleted on another node stays in the queue")
	}
}

func TestConfigRefreshPolicyChangeReschedules(t *testing.T) {
	e := newRefreshEnv(t, 2)
	e.addRole(t, "app", map[string]any{"default_ttl": "1h"})
	e.tick(t)
	planned, _ := queued(e.b, "app")
	mustSucceed(t, request(t, e.b, e.s, logical.UpdateOperation, "config", map[string]any{"refresh_fraction": 0.8}))
	e.tick(t)
	want := planRefresh("app", e.token(t, "app"), refreshPolicy{RefreshFraction: 0.8}).priority()
	if p, _ := queued(e.b, "app"); p != want || p >= planned {
		t.Fatalf("after refresh_fraction=0.8 the role is queued at %d, want %d", p, want)
	}
}

func TestShortLivedTokensAreLeftToReads(t *testing.T) {
	e := newRefreshEnv(t, 2)
	e.addRole(t, "short", map[string]any{"default_ttl": "30s"})
	e.tick(t)
	if e.p.Requests() != 1 {
		t.Fatalf("the first tick should obtain the first token, sent %d requests", e.p.Requests())
	}
	for range 5 {
		e.clock.Advance(refreshTick)
		e.tick(t)
	}
	if e.p.Requests() != 1 {
		t.Fatalf("the refresher refreshed a token shorter than a tick (%d requests)", e.p.Requests())
	}
	if status := readStatus(t, e.b, e.s, "short"); status["next_refresh"] != "" {
		t.Fatalf("next_refresh should be empty for a token refreshed on read, got %v", status["next_refresh"])
	}
}

func TestRefresherRunsOnlyWhereWriteSafe(t *testing.T) {
	e := newRefreshEnv(t, 2)
	e.addRole(t, "app", map[string]any{"default_ttl": "1h"})

	// The same storage seen from a performance standby, which must not write.
	standby := newBackend(e.clock, oauthclient.NewClient)
	conf := logical.TestBackendConfig()
	conf.StorageView = e.s
	conf.System.(*logical.StaticSystemView).ReplicationStateVal = consts.ReplicationPerformanceStandby
	if err := standby.Setup(context.Background(), conf); err != nil {
		t.Fatal(err)
	}
	initialize(t, standby, e.s)
	tick(t, standby, e.s)
	if e.p.Requests() != 0 || standby.refresher.current() != nil {
		t.Fatalf("a performance standby refreshed (%d requests) or built a queue", e.p.Requests())
	}
	e.tick(t)
	if e.p.Requests() != 1 {
		t.Fatalf("the active node should refresh the role, sent %d requests", e.p.Requests())
	}
}

func TestCleanStopsRefresher(t *testing.T) {
	e := newRefreshEnv(t, 2)
	e.addRole(t, "app", map[string]any{"default_ttl": "1h"})
	e.b.Cleanup(context.Background())
	e.tick(t)
	if e.p.Requests() != 0 {
		t.Fatal("the refresher ran after Clean")
	}
}

// TestCancelledTickKeepsUnreachedRoles cancels a tick while requests are held at the provider:
// roles it did not reach stay queued as they were.
func TestCancelledTickKeepsUnreachedRoles(t *testing.T) {
	e := newRefreshEnv(t, 1)
	for i := range 5 {
		e.addRole(t, fmt.Sprintf("r%d", i), map[string]any{"default_ttl": "1h"})
	}
	hold := make(chan struct{})
	e.p.Hold = hold
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() {
		_, err := e.b.HandleRequest(ctx, &logical.Request{Operation: logical.RollbackOperation, Storage: e.s})
		done <- err
	}()
	waitFor(t, func() bool { return e.p.Requests() == 1 })
	cancel()
	close(hold)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if n := len(queueSnapshot(e.b)); n != 5 {
		t.Fatalf("after a cancelled tick %d of 5 roles are queued", n)
	}
	// The grant under way when the tick was cancelled completes; some roles were not reached.
	if e.p.Requests() >= 5 {
		t.Fatalf("a cancelled tick went on to send %d requests", e.p.Requests())
	}
	e.tick(t)
	for i := range 5 {
		if tok := e.token(t, fmt.Sprintf("r%d", i)); tok.remaining(e.clock.Now()) == 0 {
			t.Fatalf("r%d was not refreshed by the next tick", i)
		}
	}
}

// A token whose refresh window is narrower than the look-ahead is not replaced by the tick right
// after a read obtained it, only when it would otherwise expire before the next tick.
func TestRefresherLeavesFreshNarrowWindowTokenAlone(t *testing.T) {
	e := newRefreshEnv(t, 4)
	e.addRole(t, "short", map[string]any{"default_ttl": 120})
	readCreds(t, e.b, e.s, "short", nil)
	first := e.token(t, "short").AccessToken
	requests := e.p.Requests()

	e.clock.Advance(5 * time.Second)
	e.tick(t)
	if e.p.Requests() != requests {
		t.Fatal("the tick re-granted a token a read had obtained 5s earlier")
	}
	e.clock.Advance(refreshTick)
	e.tick(t)
	if e.token(t, "short").AccessToken == first {
		t.Fatal("a token that would expire before the next tick must be replaced")
	}
}

// A mount that starts on the node that may write (a new leader, a plugin reload) refreshes what
// is due at once: Vault's first periodic call would come only a minute later.
func TestInitializeRefreshesDueRolesWithoutWaitingForATick(t *testing.T) {
	e := newRefreshEnv(t, 4)
	e.addRole(t, "app", map[string]any{"default_ttl": "10m"})
	e.tick(t)
	obtained := e.token(t, "app").AccessToken
	e.clock.Advance(9 * time.Minute)

	restarted := newBackend(e.clock, oauthclient.NewClient)
	conf := logical.TestBackendConfig()
	conf.StorageView = e.s
	if err := restarted.Setup(context.Background(), conf); err != nil {
		t.Fatal(err)
	}
	requests := e.p.Requests()
	initialize(t, restarted, e.s)
	if e.p.Requests() != requests+1 || storedToken(t, e.s, "app").AccessToken == obtained {
		t.Fatal("the due role was not refreshed when the mount started")
	}
}
