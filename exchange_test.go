package oauth

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/helper/testhelpers/schema"
	"github.com/hashicorp/vault/sdk/logical"

	"github.com/oauth-broker/vault-plugin-secrets-oauth/internal/testprovider"
)

const ordersAudience = "https://orders.example"

// testJWT is an unsigned JWT for subject sub expiring at exp: the provider below takes it as a
// subject token of another issuer, and the plugin reads only its exp.
func testJWT(sub string, exp time.Time) string {
	enc := base64.RawURLEncoding.EncodeToString
	claims, _ := json.Marshal(map[string]any{"sub": sub, "exp": exp.Unix()})
	return enc([]byte(`{"alg":"none"}`)) + "." + enc(claims) + ".c2ln"
}

// acceptTestJWT takes a testJWT that has not expired as a subject token.
func acceptTestJWT(token, tokenType string) (string, bool) {
	parts := strings.Split(token, ".")
	if tokenType != testprovider.TokenTypeJWT || len(parts) != 3 {
		return "", false
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	var claims struct {
		Sub string `json:"sub"`
		Exp int64  `json:"exp"`
	}
	if err != nil || json.Unmarshal(payload, &claims) != nil || claims.Sub == "" || time.Now().Unix() >= claims.Exp {
		return "", false
	}
	return claims.Sub, true
}

// exchangeBackend configures role "app" (client_credentials, the broad token), "orders" (its
// token exchanged for the orders audience and scope) and "obo" (on-behalf-of: the reader's
// subject token exchanged for the same).
func exchangeBackend(t testing.TB) (*testprovider.Provider, *backend, *faultyStorage) {
	t.Helper()
	p := newProviderWithClient(t)
	p.AllowExchange(testClientID, testprovider.ExchangePolicy{Audiences: []string{ordersAudience}, Scopes: []string{"orders.read"}, AcceptSubject: acceptTestJWT})
	b, s := configured(t, p)
	exchanged := map[string]any{"grant_type": "token_exchange", "audience": ordersAudience, "scopes": "orders.read"}
	mustSucceed(t, request(t, b, s, logical.UpdateOperation, "roles/obo", exchanged))
	exchanged["subject_role"] = "app"
	mustSucceed(t, request(t, b, s, logical.UpdateOperation, "roles/orders", exchanged))
	return p, b, s
}

func exchangeAs(t testing.TB, b *backend, s logical.Storage, role, subject, subjectType string) *logical.Response {
	t.Helper()
	data := map[string]any{"subject_token": subject}
	if subjectType != "" {
		data["subject_token_type"] = subjectType
	}
	return mustSucceed(t, request(t, b, s, logical.UpdateOperation, "exchange/"+role, data))
}

// mustBeExchangedFrom asserts that the provider issued at as the orders token exchanged from
// subject, and that it is active.
func mustBeExchangedFrom(t *testing.T, p *testprovider.Provider, at, subject, wantSub string) {
	t.Helper()
	issued, active := p.Introspect(at)
	if !active || issued.SubjectToken != subject || issued.Subject != wantSub {
		t.Fatalf("token is not an active exchange of the expected subject token: active=%v subject=%q", active, issued.Subject)
	}
	if got := issued.Params["audience"]; len(got) != 1 || got[0] != ordersAudience || issued.Scope != "orders.read" {
		t.Fatalf("exchanged for audience %v scope %q, want %s orders.read", got, issued.Scope, ordersAudience)
	}
	if got := issued.Params["requested_token_type"]; len(got) != 1 || got[0] != tokenTypeAccessToken {
		t.Fatalf("requested_token_type = %v", got)
	}
}

func TestExchangeChainedRoleUsesSubjectRoleToken(t *testing.T) {
	p, b, s := exchangeBackend(t)
	resp := readCreds(t, b, s, "orders", nil)
	broad := readCreds(t, b, s, "app", nil).Data["access_token"].(string)
	narrow := resp.Data["access_token"].(string)
	mustBeExchangedFrom(t, p, narrow, broad, testClientID)
	if resp.Data["issued_token_type"] != tokenTypeAccessToken || resp.Secret == nil {
		t.Fatalf("want a lease with issued_token_type, got %#v", resp.Data)
	}

	requests := p.Requests()
	if again := readCreds(t, b, s, "orders", nil).Data["access_token"]; again != narrow || p.Requests() != requests {
		t.Fatalf("a cached chained token was not served from cache")
	}

	// Rotating the subject role replaces the chained token at the next read.
	mustSucceed(t, request(t, b, s, logical.UpdateOperation, "rotate/app", nil))
	broad2 := readCreds(t, b, s, "app", nil).Data["access_token"].(string)
	narrow2 := readCreds(t, b, s, "orders", nil).Data["access_token"].(string)
	if broad2 == broad || narrow2 == narrow {
		t.Fatalf("rotating the subject role did not replace the chained token")
	}
	mustBeExchangedFrom(t, p, narrow2, broad2, testClientID)

	// So does an edit of the subject role, which retires its token.
	mustSucceed(t, request(t, b, s, logical.UpdateOperation, "roles/app", map[string]any{"scopes": "read"}))
	narrow3 := readCreds(t, b, s, "orders", nil).Data["access_token"].(string)
	broad3 := readCreds(t, b, s, "app", nil).Data["access_token"].(string)
	if broad3 == broad2 || narrow3 == narrow2 {
		t.Fatalf("editing the subject role did not replace the chained token")
	}
	mustBeExchangedFrom(t, p, narrow3, broad3, testClientID)
}

func TestExchangeActorRoleIsSentAsActorToken(t *testing.T) {
	p, b, s := exchangeBackend(t)
	mustSucceed(t, request(t, b, s, logical.UpdateOperation, "roles/svc", nil))
	mustSucceed(t, request(t, b, s, logical.UpdateOperation, "roles/orders", map[string]any{"actor_role": "svc"}))
	narrow := readCreds(t, b, s, "orders", nil).Data["access_token"].(string)
	actor := readCreds(t, b, s, "svc", nil).Data["access_token"].(string)
	if issued, _ := p.Introspect(narrow); issued.ActorToken != actor {
		t.Fatalf("the actor role's token was not sent as actor_token")
	}
	mustSucceed(t, request(t, b, s, logical.UpdateOperation, "rotate/svc", nil))
	if again := readCreds(t, b, s, "orders", nil).Data["access_token"].(string); again == narrow {
		t.Fatalf("rotating the actor role did not replace the chained token")
	}
}

// A chained grant held open at the provider while its subject role rotates must not store the
// token obtained with the replaced subject token.
func TestExchangeSubjectRotatedDuringChainedGrant(t *testing.T) {
	p, b, s := exchangeBackend(t)
	first := readCreds(t, b, s, "app", nil).Data["access_token"].(string)

	held, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	p.Intercept = func(_ http.ResponseWriter, r *http.Request) bool {
		if r.ParseForm() == nil && r.PostForm.Get("grant_type") == "urn:ietf:params:oauth:grant-type:token-exchange" {
			once.Do(func() { close(held) })
			<-release
		}
		return false
	}
	answer := make(chan *logical.Response, 1)
	go func() {
		resp, _ := requestErr(b, s, logical.ReadOperation, "creds/orders", nil)
		answer <- resp
	}()
	<-held
	mustSucceed(t, request(t, b, s, logical.UpdateOperation, "rotate/app", nil))
	second := readCreds(t, b, s, "app", nil).Data["access_token"].(string)
	close(release)

	// The held read obtained a token for a subject token no longer served: it is told to read
	// again rather than given it.
	if resp := <-answer; resp == nil || !resp.IsError() || !strings.Contains(resp.Error().Error(), "read again") {
		t.Fatalf("the held read was not told to read again: %#v", resp)
	}
	stored := new(tokenEntry)
	if found, _ := getJSON(t.Context(), s.Storage, tokenPrefix+"orders", stored); found && stored.AccessToken != "" {
		if issued, _ := p.Introspect(stored.AccessToken); issued.SubjectToken == first {
			t.Fatalf("the token exchanged from the rotated subject token was stored")
		}
	}
	narrow := readCreds(t, b, s, "orders", nil).Data["access_token"].(string)
	mustBeExchangedFrom(t, p, narrow, second, testClientID)
}

func TestExchangeOnBehalfOfCachesPerSubject(t *testing.T) {
	p, b, s := exchangeBackend(t)
	alice := testJWT("alice", time.Now().Add(2*time.Hour))
	resp := exchangeAs(t, b, s, "obo", alice, "jwt")
	at := resp.Data["access_token"].(string)
	mustBeExchangedFrom(t, p, at, alice, "alice")
	if resp.Secret != nil || resp.Data["issued_token_type"] != tokenTypeAccessToken {
		t.Fatalf("want no lease and issued_token_type, got %#v", resp)
	}
	for _, v := range resp.Data {
		if v == alice {
			t.Fatalf("the answer echoes the subject token")
		}
	}

	broad := readCreds(t, b, s, "app", nil).Data["access_token"].(string)
	requests, puts := p.Requests(), s.puts.Load()
	if again := exchangeAs(t, b, s, "obo", alice, "jwt").Data["access_token"]; again != at {
		t.Fatalf("a second exchange of the same subject token was not served from cache")
	}
	if p.Requests() != requests {
		t.Fatalf("a cache hit called the provider")
	}

	// Another subject, and the same subject under another type, are other entries.
	bob := testJWT("bob", time.Now().Add(2*time.Hour))
	if other := exchangeAs(t, b, s, "obo", bob, "jwt").Data["access_token"]; other == at {
		t.Fatalf("another subject got the same token")
	}
	// An access token this provider issued is a subject token as well.
	mustBeExchangedFrom(t, p, exchangeAs(t, b, s, "obo", broad, "").Data["access_token"].(string), broad, testClientID)

	if s.puts.Load() != puts {
		t.Fatalf("exchanges wrote storage")
	}
	for k, v := range s.snapshot(t) {
		if strings.Contains(v, alice) || strings.Contains(v, at) {
			t.Fatalf("storage entry %s holds the subject token or its exchange", k)
		}
	}
	// A role edit clears the cache.
	mustSucceed(t, request(t, b, s, logical.UpdateOperation, "roles/obo", map[string]any{"default_ttl": "2h"}))
	requests = p.Requests()
	exchangeAs(t, b, s, "obo", alice, "jwt")
	if p.Requests() != requests+1 {
		t.Fatalf("the exchange after a role edit was served from the old cache")
	}
}

func TestExchangeCacheEndsAtSubjectExpiry(t *testing.T) {
	p, b, s := exchangeBackend(t)
	clk := clockOf(b)
	clk.Pin(time.Now())
	short := testJWT("alice", time.Now().Add(time.Minute))
	long := testJWT("alice", time.Now().Add(2*time.Hour))
	first := exchangeAs(t, b, s, "obo", short, "jwt").Data["access_token"]
	exchangeAs(t, b, s, "obo", long, "jwt")

	clk.Advance(59 * time.Second)
	requests := p.Requests()
	if exchangeAs(t, b, s, "obo", short, "jwt").Data["access_token"] != first || p.Requests() != requests {
		t.Fatalf("the exchange was not cached while its subject token lived")
	}
	clk.Advance(2 * time.Second)
	exchangeAs(t, b, s, "obo", long, "jwt")
	if p.Requests() != requests {
		t.Fatalf("the exchange of a subject token that still lives was not cached")
	}
	// Past the subject token's exp the provider decides again (this one, on real time, still
	// takes it).
	if exchangeAs(t, b, s, "obo", short, "jwt").Data["access_token"] == first || p.Requests() != requests+1 {
		t.Fatalf("the exchange of an expired subject token was served from cache")
	}
}

func TestExchangeCacheEndsAtRefreshThreshold(t *testing.T) {
	p, b, s := exchangeBackend(t)
	p.TokenTTL = 10 * time.Minute // threshold: half of it, by default
	clk := clockOf(b)
	clk.Pin(time.Now())
	alice := testJWT("alice", time.Now().Add(24*time.Hour))
	first := exchangeAs(t, b, s, "obo", alice, "jwt").Data["access_token"]
	clk.Advance(4 * time.Minute)
	if exchangeAs(t, b, s, "obo", alice, "jwt").Data["access_token"] != first {
		t.Fatalf("not cached before the refresh threshold")
	}
	clk.Advance(2 * time.Minute)
	if exchangeAs(t, b, s, "obo", alice, "jwt").Data["access_token"] == first {
		t.Fatalf("served past the refresh threshold")
	}
}

func TestExchangeConcurrentRequestsShareOneExchange(t *testing.T) {
	p, b, s := exchangeBackend(t)
	p.Hold = make(chan struct{})
	alice := testJWT("alice", time.Now().Add(time.Hour))
	const readers = 20
	tokens := make(chan string, readers)
	var wg sync.WaitGroup
	for range readers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := requestErr(b, s, logical.UpdateOperation, "exchange/obo", map[string]any{"subject_token": alice, "subject_token_type": "jwt"})
			if err != nil || resp.IsError() {
				tokens <- ""
				return
			}
			tokens <- resp.Data["access_token"].(string)
		}()
	}
	waitFor(t, func() bool { return p.Requests() >= 1 })
	close(p.Hold)
	wg.Wait()
	close(tokens)
	var first string
	for tok := range tokens {
		if tok == "" || first != "" && tok != first {
			t.Fatalf("readers got different tokens or an error")
		}
		first = tok
	}
	if p.Exchanges() != 1 || p.Requests() != 1 {
		t.Fatalf("%d concurrent exchanges of one subject made %d requests", readers, p.Requests())
	}
}

func TestExchangeCacheIsBounded(t *testing.T) {
	p, b, s := exchangeBackend(t)
	b.exchanges = newExchangeCache(2, defaultExchangeBytes)
	subjects := []string{testJWT("a", time.Now().Add(time.Hour)), testJWT("b", time.Now().Add(time.Hour)), testJWT("c", time.Now().Add(time.Hour))}
	exchangeAs(t, b, s, "obo", subjects[0], "jwt")
	exchangeAs(t, b, s, "obo", subjects[1], "jwt")
	exchangeAs(t, b, s, "obo", subjects[0], "jwt") // a is now the most recently used
	exchangeAs(t, b, s, "obo", subjects[2], "jwt") // evicts b
	if n, _ := b.exchanges.len(); n != 2 {
		t.Fatalf("cache holds %d entries, bound is 2", n)
	}
	requests := p.Requests()
	exchangeAs(t, b, s, "obo", subjects[0], "jwt")
	exchangeAs(t, b, s, "obo", subjects[2], "jwt")
	if p.Requests() != requests {
		t.Fatalf("recently used entries were evicted")
	}
	exchangeAs(t, b, s, "obo", subjects[1], "jwt")
	if p.Requests() != requests+1 {
		t.Fatalf("the least recently used entry was not evicted")
	}

	// The byte bound: room for about three entries.
	b.exchanges = newExchangeCache(1000, 3*(exchangeEntryOverhead+200))
	for i := range 10 {
		exchangeAs(t, b, s, "obo", testJWT(fmt.Sprint("user", i), time.Now().Add(time.Hour)), "jwt")
	}
	if n, size := b.exchanges.len(); n == 0 || n > 3 || size > 3*(exchangeEntryOverhead+200) {
		t.Fatalf("cache holds %d entries of %d bytes, over its byte bound", n, size)
	}
}

func TestExchangeErrorsNeverEchoTheSubjectToken(t *testing.T) {
	p, b, s := exchangeBackend(t)
	p.Intercept = func(w http.ResponseWriter, r *http.Request) bool {
		_ = r.ParseForm()
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusBadRequest)
		_ = json.NewEncoder(w).Encode(map[string]string{"error": "invalid_grant", "error_description": "bad subject_token " + r.PostForm.Get("subject_token")})
		return true
	}
	subject := testJWT("alice", time.Now().Add(time.Hour))
	resp, err := requestErr(b, s, logical.UpdateOperation, "exchange/obo", map[string]any{"subject_token": subject, "subject_token_type": "jwt"})
	if err != nil || !resp.IsError() {
		t.Fatalf("want an error response, got %v %v", resp, err)
	}
	msg := resp.Error().Error()
	if strings.Contains(msg, strings.Split(subject, ".")[1]) || !strings.Contains(msg, "invalid_grant") {
		t.Fatalf("error %q echoes the subject token or lacks the provider's error", msg)
	}

	// A chained role: its subject token is the other role's access token, which neither the
	// answer nor the role's status may show.
	p.Intercept = nil
	broad := readCreds(t, b, s, "app", nil).Data["access_token"].(string)
	p.Intercept = func(w http.ResponseWriter, r *http.Request) bool {
		if r.ParseForm() != nil || r.PostForm.Get("subject_token") == "" {
			return false
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusBadRequest)
		_ = json.NewEncoder(w).Encode(map[string]string{"error": "invalid_grant", "error_description": "bad subject_token " + r.PostForm.Get("subject_token")})
		return true
	}
	resp, err = requestErr(b, s, logical.ReadOperation, "creds/orders", nil)
	if err != nil || !resp.IsError() {
		t.Fatalf("want an error response, got %v %v", resp, err)
	}
	status := request(t, b, s, logical.ReadOperation, "roles/orders/status", nil)
	for _, text := range []string{resp.Error().Error(), fmt.Sprint(status.Data)} {
		if quotes(text, broad) || !strings.Contains(text, "invalid_grant") {
			t.Fatalf("%q echoes the subject role's token or lacks the provider's error", text)
		}
	}

	// Mistyped and oversized subject tokens are refused without echoing them.
	for _, value := range []any{[]any{subject, subject}, strings.Repeat("x", maxSubjectTokenBytes+1)} {
		resp, err := requestErr(b, s, logical.UpdateOperation, "exchange/obo", map[string]any{"subject_token": value})
		if err != nil {
			t.Fatal(err)
		}
		mustFailNaming(t, resp, "subject_token")
		if strings.Contains(resp.Error().Error(), "alice") || strings.Contains(resp.Error().Error(), "xxxx") {
			t.Fatalf("error %q echoes the subject token", resp.Error())
		}
	}
}

func TestExchangeRoleKindsAndPaths(t *testing.T) {
	_, b, s := exchangeBackend(t)
	for _, tc := range []struct {
		op          logical.Operation
		path, field string
		data        map[string]any
	}{
		{logical.ReadOperation, "creds/obo", "exchange/obo", nil},
		{logical.UpdateOperation, "exchange/orders", "creds/orders", map[string]any{"subject_token": "t"}},
		{logical.UpdateOperation, "exchange/app", "token_exchange", map[string]any{"subject_token": "t"}},
		{logical.UpdateOperation, "exchange/obo", "subject_token", nil},
		{logical.UpdateOperation, "exchange/obo", "subject_token_type", map[string]any{"subject_token": "t", "subject_token_type": "bearer"}},
		{logical.UpdateOperation, "roles/app", "subject_role", map[string]any{"subject_role": "orders"}},
		{logical.UpdateOperation, "roles/x", "requested_token_type", map[string]any{"grant_type": "token_exchange", "requested_token_type": "nonsense"}},
		{logical.UpdateOperation, "rotate/obo", "exchange/obo", nil},
	} {
		resp, err := requestErr(b, s, tc.op, tc.path, tc.data)
		if err != nil {
			t.Fatal(err)
		}
		mustFailNaming(t, resp, tc.field)
	}
	mustSucceed(t, request(t, b, s, logical.UpdateOperation, "roles/obo", map[string]any{"requested_token_type": "jwt"}))
	if got := request(t, b, s, logical.ReadOperation, "roles/obo", nil).Data["requested_token_type"]; got != "urn:ietf:params:oauth:token-type:jwt" {
		t.Fatalf("requested_token_type alias stored as %v", got)
	}
}

func TestExchangeChainLoopsAndDeletesAreRefused(t *testing.T) {
	_, b, s := exchangeBackend(t)
	// app <- orders <- deep
	mustSucceed(t, request(t, b, s, logical.UpdateOperation, "roles/deep", map[string]any{"grant_type": "token_exchange", "subject_role": "orders"}))
	// An OAuth 1.0a role signs requests: it has no access token to be a subject.
	mustSucceed(t, request(t, b, s, logical.UpdateOperation, "roles/oauth1", map[string]any{"grant_type": "oauth1", "consumer_key": "ck", "consumer_secret": "cs", "token": "t", "token_secret": "ts"}))
	before := s.snapshot(t)
	for _, tc := range []struct {
		role  string
		data  map[string]any
		field string
		loop  string
	}{
		{"app", map[string]any{"grant_type": "token_exchange", "subject_role": "deep"}, "subject_role", "app -> deep -> orders -> app"},
		{"app", map[string]any{"grant_type": "token_exchange", "subject_role": "obo", "actor_role": "orders"}, "subject_role", "has no token of its own"},
		{"orders", map[string]any{"actor_role": "deep"}, "actor_role", "orders -> deep -> orders"},
		{"orders", map[string]any{"subject_role": "orders"}, "subject_role", "orders -> orders"},
		{"orders", map[string]any{"subject_role": "missing"}, "subject_role", "does not exist"},
		{"orders", map[string]any{"subject_role": ""}, "subject_role", "subject_role or actor_role of deep"},
		{"signer", map[string]any{"grant_type": "token_exchange", "subject_role": "oauth1"}, "subject_role", "signs OAuth 1.0a requests"},
		{"app", map[string]any{"grant_type": "oauth1", "consumer_key": "ck", "consumer_secret": "cs", "token": "t", "token_secret": "ts"}, "grant_type", "subject_role or actor_role of orders"},
	} {
		resp, err := requestErr(b, s, logical.UpdateOperation, "roles/"+tc.role, tc.data)
		if err != nil {
			t.Fatal(err)
		}
		mustFailNaming(t, resp, tc.field)
		if !strings.Contains(resp.Error().Error(), tc.loop) {
			t.Fatalf("error %q does not name %q", resp.Error(), tc.loop)
		}
	}
	resp, err := requestErr(b, s, logical.DeleteOperation, "roles/orders", nil)
	if err != nil {
		t.Fatal(err)
	}
	mustFailNaming(t, resp, "deep")
	resp, err = requestErr(b, s, logical.DeleteOperation, "roles/app", nil)
	if err != nil {
		t.Fatal(err)
	}
	mustFailNaming(t, resp, "orders")
	if after := s.snapshot(t); fmt.Sprint(after) != fmt.Sprint(before) {
		t.Fatalf("a refused write or delete changed storage")
	}
	// Once nothing uses it, a role can go.
	mustSucceed(t, request(t, b, s, logical.DeleteOperation, "roles/deep", nil))
	mustSucceed(t, request(t, b, s, logical.DeleteOperation, "roles/orders", nil))
}

// Concurrent writes that would close a loop between them: one of them is refused.
func TestExchangeRacingWritesCannotCloseALoop(t *testing.T) {
	_, b, s := exchangeBackend(t)
	mustSucceed(t, request(t, b, s, logical.UpdateOperation, "roles/a", nil))
	mustSucceed(t, request(t, b, s, logical.UpdateOperation, "roles/b", nil))
	results := make(chan *logical.Response, 2)
	for _, w := range [][2]string{{"a", "b"}, {"b", "a"}} {
		go func() {
			resp, _ := requestErr(b, s, logical.UpdateOperation, "roles/"+w[0], map[string]any{"grant_type": "token_exchange", "subject_role": w[1]})
			results <- resp
		}()
	}
	refused := 0
	for range 2 {
		if resp := <-results; resp != nil && resp.IsError() {
			refused++
		}
	}
	if refused != 1 {
		t.Fatalf("%d of two loop-closing writes were refused, want exactly one", refused)
	}
}

func TestExchangeAnswersMatchSchema(t *testing.T) {
	_, b, s := exchangeBackend(t)
	check := func(op logical.Operation, path string, data map[string]any) {
		t.Helper()
		resp := mustSucceed(t, request(t, b, s, op, path, data))
		schema.ValidateResponse(t, schema.GetResponseSchema(t, b.Route(path), op), resp, true)
	}
	check(logical.UpdateOperation, "exchange/obo", map[string]any{"subject_token": testJWT("alice", time.Now().Add(time.Hour)), "subject_token_type": "jwt"})
	check(logical.ReadOperation, "creds/orders", nil)
	check(logical.ReadOperation, "roles/orders", nil)
	if help, _ := request(t, b, s, logical.HelpOperation, "exchange/obo", nil).Data["help"].(string); help == "" {
		t.Fatal("exchange/ has no help")
	}
}

func TestExchangeRefresherSkipsReaderSuppliedRoles(t *testing.T) {
	p, b, s := exchangeBackend(t)
	if err := b.refreshDue(context.Background(), s); err != nil {
		t.Fatal(err)
	}
	if issued := p.Exchanges(); issued != 1 {
		t.Fatalf("the refresher made %d exchanges, want 1 (orders; obo has no subject of its own)", issued)
	}
	if found, _ := getJSON(t.Context(), s.Storage, tokenPrefix+"obo", new(tokenEntry)); found {
		t.Fatalf("the refresher recorded a token or failure for an on-behalf-of role")
	}
}

func TestExchangeMetricsCountCallsAndHits(t *testing.T) {
	_, b, s := exchangeBackend(t)
	alice := testJWT("alice", time.Now().Add(time.Hour))
	exchangeAs(t, b, s, "obo", alice, "jwt")
	exchangeAs(t, b, s, "obo", alice, "jwt")
	text := scrape(t, b, s)
	mustContain(t, text,
		`vault_oauth_grants_total{grant_type="token_exchange",outcome="success",role="obo"} 1`,
		`vault_oauth_creds_reads_total{result="hit",role="obo"} 1`,
		`vault_oauth_creds_reads_total{result="miss",role="obo"} 1`,
	)
	if quotes(text, alice) {
		t.Fatal("the metrics show the subject token")
	}
}

func TestExchangeQuotesFindsPartialTokens(t *testing.T) {
	token := "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGH"
	for _, text := range []string{"x " + token, "clipped " + token[:20] + "…", "tail " + token[len(token)-17:], "middle " + token[10:34]} {
		if !quotes(text, token) {
			t.Errorf("%q quotes the token, not found", text)
		}
	}
	if quotes("invalid_grant: subject token is not active", token) || !quotes("short abc!", "abc") {
		t.Error("quotes finds what is not there, or misses a short token")
	}
}
