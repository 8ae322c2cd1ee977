package oauth

import (
	"context"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"

	"github.com/oauth-broker/vault-plugin-secrets-oauth/internal/testprovider"
)

const testRedirectURI = "https://vault.example.com/v1/oauth/callback"

// codeEnv is a backend whose config discovers a provider with an authorization endpoint, and
// whose role "app" is an authorization_code role asking for openid and offline access.
type codeEnv struct {
	b *backend
	s *faultyStorage
	p *testprovider.Provider
}

func newCodeEnv(t *testing.T) *codeEnv {
	t.Helper()
	p := testprovider.New(t)
	p.AddClient(&testprovider.Client{ID: testClientID, Secret: testClientSecret, AuthMethod: "client_secret_basic", RedirectURIs: []string{testRedirectURI}})
	b, s := newTestBackend(t)
	mustSucceed(t, request(t, b, s, logical.UpdateOperation, "config", map[string]any{
		"issuer": p.URL, "client_id": testClientID, "client_secret": testClientSecret, "redirect_uri": testRedirectURI,
	}))
	mustSucceed(t, request(t, b, s, logical.UpdateOperation, "roles/app", map[string]any{
		"grant_type": "authorization_code", "scopes": "openid,offline_access", "auth_params": "access_type=offline,prompt=consent",
	}))
	return &codeEnv{b: b, s: s, p: p}
}

// authorize starts the role's authorization and returns its auth_url and state.
func (e *codeEnv) authorize(t *testing.T, role string) (string, string) {
	t.Helper()
	resp := mustSucceed(t, request(t, e.b, e.s, logical.UpdateOperation, "authorize/"+role, nil))
	return resp.Data["auth_url"].(string), resp.Data["state"].(string)
}

// browseAuthorized starts an authorization of role app and follows it to the callback.
func (e *codeEnv) browseAuthorized(t *testing.T) url.Values {
	t.Helper()
	authURL, _ := e.authorize(t, "app")
	return browse(t, authURL)
}

// browse opens authURL as a browser would and returns the parameters of the redirect back.
func browse(t *testing.T, authURL string) url.Values {
	t.Helper()
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := client.Get(authURL)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	loc, err := url.Parse(resp.Header.Get("Location"))
	if resp.StatusCode != http.StatusFound || err != nil {
		t.Fatalf("authorization endpoint answered %d, Location %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	if got := loc.Scheme + "://" + loc.Host + loc.Path; got != testRedirectURI {
		t.Fatalf("redirected to %s", got)
	}
	return loc.Query()
}

// callback delivers the redirect's parameters to the callback path as the browser does.
func (e *codeEnv) callback(t *testing.T, params url.Values) (int, string) {
	t.Helper()
	return e.callbackPage(t, logical.ReadOperation, params)
}

// callbackPage delivers params to the callback path with op and returns the status and body of
// the HTML page it answers, which must not echo the code or the state.
func (e *codeEnv) callbackPage(t *testing.T, op logical.Operation, params url.Values) (int, string) {
	t.Helper()
	data := map[string]any{}
	for k := range params {
		data[k] = params.Get(k)
	}
	resp := request(t, e.b, e.s, op, "callback", data)
	if ct := resp.Data[logical.HTTPContentType]; ct != "text/html; charset=utf-8" {
		t.Fatalf("content type %v", ct)
	}
	body := string(resp.Data[logical.HTTPRawBody].([]byte))
	for _, secret := range []string{params.Get("code"), params.Get("state")} {
		if secret != "" && strings.Contains(body, secret) {
			t.Fatalf("the page echoes a code or state: %s", body)
		}
	}
	return resp.Data[logical.HTTPStatusCode].(int), body
}

// connect runs the whole flow for role and returns the page's status.
func (e *codeEnv) connect(t *testing.T, role string) int {
	t.Helper()
	authURL, _ := e.authorize(t, role)
	status, _ := e.callback(t, browse(t, authURL))
	return status
}

// rediscover changes the provider's metadata and makes the config discover it again.
func (e *codeEnv) rediscover(t *testing.T, md map[string]any) {
	t.Helper()
	e.p.SetMetadata(md)
	mustSucceed(t, request(t, e.b, e.s, logical.UpdateOperation, "config", map[string]any{"issuer": e.p.URL + "/"}))
	mustSucceed(t, request(t, e.b, e.s, logical.UpdateOperation, "config", map[string]any{"issuer": e.p.URL}))
}

func (e *codeEnv) status(t *testing.T, role string) map[string]any {
	t.Helper()
	return mustSucceed(t, request(t, e.b, e.s, logical.ReadOperation, "roles/"+role+"/status", nil)).Data
}

// storedRoleAndTokens is what a failed callback must leave as it was.
func storedRoleAndTokens(t *testing.T, s *faultyStorage) map[string]string {
	t.Helper()
	out := map[string]string{}
	for k, v := range s.snapshot(t) {
		if strings.HasPrefix(k, rolePrefix) || strings.HasPrefix(k, tokenPrefix) {
			out[k] = v
		}
	}
	return out
}

// requireKept fails the test unless after holds exactly the entries of kept.
func requireKept(t *testing.T, kept, after map[string]string) {
	t.Helper()
	if len(after) != len(kept) {
		t.Fatalf("storage changed: %d entries, was %d", len(after), len(kept))
	}
	for k, v := range kept {
		if after[k] != v {
			t.Fatalf("%s changed", k)
		}
	}
}

func TestAuthorizationCodeFlow(t *testing.T) {
	e := newCodeEnv(t)
	resp := request(t, e.b, e.s, logical.ReadOperation, "creds/app", nil)
	mustFailNaming(t, resp, "vault write -force <mount>/authorize/app")
	resp = withMount(request(t, e.b, e.s, logical.ReadOperation, "creds/app", nil), "oauth/")
	mustFailNaming(t, resp, "vault write -force oauth/authorize/app")
	// Waiting for a person is no failure, and leaves the refresher nothing to do.
	initialize(t, e.b, e.s)
	tick(t, e.b, e.s)
	if st := e.status(t, "app"); st["authorization"] != "pending" || st["last_error"] != "" || st["failures"] != int64(0) || st["next_refresh"] != "" || e.p.Requests() != 0 {
		t.Fatalf("status before any flow: %v (%d token requests)", st, e.p.Requests())
	}

	authURL, state := e.authorize(t, "app")
	u, _ := url.Parse(authURL)
	q := u.Query()
	want := map[string]string{
		"response_type": "code", "client_id": testClientID, "redirect_uri": testRedirectURI, "scope": "openid offline_access",
		"state": state, "code_challenge_method": "S256", "access_type": "offline", "prompt": "consent",
	}
	for k, v := range want {
		if q.Get(k) != v {
			t.Errorf("auth_url %s = %q, want %q", k, q.Get(k), v)
		}
	}
	if len(q.Get("code_challenge")) != 43 || q.Get("nonce") == "" || len(state) != 43 {
		t.Errorf("challenge %q, nonce %q, state %q", q.Get("code_challenge"), q.Get("nonce"), state)
	}
	if u.Scheme+"://"+u.Host+u.Path != e.p.URL+"/authorize" {
		t.Errorf("auth_url goes to %s", u.Path)
	}
	if got := e.status(t, "app")["authorization"]; got != "pending" {
		t.Fatalf("authorization while pending = %v", got)
	}

	status, body := e.callback(t, browse(t, authURL))
	if status != http.StatusOK || !strings.Contains(body, "&#34;app&#34; is now connected") || !strings.Contains(body, "Content-Security-Policy") {
		t.Fatalf("callback page %d: %s", status, body)
	}
	st := e.status(t, "app")
	if st["authorization"] != "authorized" || st["sub"] != "alice" || st["authorized_at"] == "" || st["next_refresh"] == "" {
		t.Fatalf("status after the callback: %v", st)
	}
	at := readCreds(t, e.b, e.s, "app", nil).Data["access_token"].(string)
	if issued, active := e.p.Introspect(at); !active || issued.Subject != "alice" {
		t.Fatalf("token not active for alice: %+v", issued)
	}
	// From here the role is a refresh_token role: the refresh token rotates.
	tok, _ := e.b.currentToken(context.Background(), e.s, "app")
	rotated := mustSucceed(t, request(t, e.b, e.s, logical.UpdateOperation, "rotate/app", nil))
	next, _ := e.b.currentToken(context.Background(), e.s, "app")
	if rotated.Data["grants"] != int64(2) || next.RefreshToken == tok.RefreshToken || e.p.RefreshTokenValid(tok.RefreshToken) || !e.p.RefreshTokenValid(next.RefreshToken) {
		t.Fatalf("the refresh token did not rotate: %v", rotated.Data)
	}
	if _, active := e.p.Introspect(readCreds(t, e.b, e.s, "app", nil).Data["access_token"].(string)); !active {
		t.Fatal("the rotated token is not active")
	}
}

// The pasted completion answers JSON and needs the same state; iss, which a browser's redirect
// must carry when the provider promises it, is checked only when pasted too.
func TestAuthorizationCodePasted(t *testing.T) {
	e := newCodeEnv(t)
	e.p.SetMetadata(map[string]any{"authorization_response_iss_parameter_supported": true})
	mustSucceed(t, request(t, e.b, e.s, logical.UpdateOperation, "config", map[string]any{"issuer": e.p.URL + "/"}))
	mustSucceed(t, request(t, e.b, e.s, logical.UpdateOperation, "config", map[string]any{"issuer": e.p.URL}))
	back := e.browseAuthorized(t)
	mustFailNaming(t, request(t, e.b, e.s, logical.UpdateOperation, "callback", map[string]any{"code": back.Get("code"), "state": back.Get("state"), "iss": "https://elsewhere.example"}), "RFC 9207")
	back = e.browseAuthorized(t)
	resp := mustSucceed(t, request(t, e.b, e.s, logical.UpdateOperation, "callback", map[string]any{"code": back.Get("code"), "state": back.Get("state")}))
	if resp.Data["role"] != "app" || resp.Data["sub"] != "alice" || resp.Data["authorized_at"] == "" {
		t.Fatalf("pasted completion answered %v", resp.Data)
	}
	resp = request(t, e.b, e.s, logical.UpdateOperation, "callback", map[string]any{"code": back.Get("code"), "state": back.Get("state")})
	mustFailNaming(t, resp, "state is unknown")
}

// Every way a callback can fail answers 400, and leaves the role and its tokens as they were.
func TestCallbackFailuresChangeNothing(t *testing.T) {
	cases := []struct {
		name string
		// run returns the redirect's parameters to deliver.
		run  func(t *testing.T, e *codeEnv) url.Values
		want string
	}{
		{"unknown state", func(t *testing.T, e *codeEnv) url.Values {
			back := e.browseAuthorized(t)
			st := back.Get("state")
			back.Set("state", st[:len(st)-1]+map[bool]string{true: "B", false: "A"}[strings.HasSuffix(st, "A")])
			return back
		}, "state is unknown"},
		{"replayed state", func(t *testing.T, e *codeEnv) url.Values {
			back := e.browseAuthorized(t)
			if status, _ := e.callback(t, back); status != http.StatusOK {
				t.Fatalf("first use answered %d", status)
			}
			return back
		}, "state is unknown"},
		{"replaced state", func(t *testing.T, e *codeEnv) url.Values {
			back := e.browseAuthorized(t)
			e.authorize(t, "app")
			return back
		}, "state is unknown"},
		{"expired state", func(t *testing.T, e *codeEnv) url.Values {
			back := e.browseAuthorized(t)
			clockOf(e.b).Shift(authorizeTTL)
			return back
		}, "expired"},
		{"other role's state", func(t *testing.T, e *codeEnv) url.Values {
			mustSucceed(t, request(t, e.b, e.s, logical.UpdateOperation, "roles/other", map[string]any{"grant_type": "authorization_code", "scopes": "openid"}))
			back := e.browseAuthorized(t)
			_, otherState := e.authorize(t, "other")
			back.Set("state", otherState)
			return back
		}, "exchanging the code"},
		{"role deleted and created again", func(t *testing.T, e *codeEnv) url.Values {
			back := e.browseAuthorized(t)
			mustSucceed(t, request(t, e.b, e.s, logical.DeleteOperation, "roles/app", nil))
			mustSucceed(t, request(t, e.b, e.s, logical.UpdateOperation, "roles/app", map[string]any{"grant_type": "authorization_code", "scopes": "openid"}))
			return back
		}, "state is unknown"},
		{"provider error redirect", func(t *testing.T, e *codeEnv) url.Values {
			e.p.AuthorizeError = "access_denied"
			return e.browseAuthorized(t)
		}, "error=&#34;access_denied&#34; error_description=&#34;The &lt;b&gt;user&lt;/b&gt; said no&#34;"},
		{"code rejected", func(t *testing.T, e *codeEnv) url.Values {
			back := e.browseAuthorized(t)
			back.Set("code", back.Get("code")+"x")
			return back
		}, "exchanging the code"},
		{"wrong iss", func(t *testing.T, e *codeEnv) url.Values {
			back := e.browseAuthorized(t)
			back.Set("iss", "https://attacker.example")
			return back
		}, "RFC 9207"},
		{"missing iss the metadata promises", func(t *testing.T, e *codeEnv) url.Values {
			e.rediscover(t, map[string]any{"authorization_response_iss_parameter_supported": true})
			return e.browseAuthorized(t)
		}, "has no iss"},
		{"ID token nonce", func(t *testing.T, e *codeEnv) url.Values {
			e.p.IDTokenClaims = func(c map[string]any) { c["nonce"] = "replayed" }
			return e.browseAuthorized(t)
		}, "nonce"},
		{"ID token audience", func(t *testing.T, e *codeEnv) url.Values {
			e.p.IDTokenClaims = func(c map[string]any) { c["aud"] = "someone-else" }
			return e.browseAuthorized(t)
		}, "aud"},
		{"no refresh token", func(t *testing.T, e *codeEnv) url.Values {
			e.p.IssueRefreshTokens = false
			return e.browseAuthorized(t)
		}, "no refresh token"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := newCodeEnv(t)
			// An authorized role: what a failed re-authorization must keep.
			if status := e.connect(t, "app"); status != http.StatusOK {
				t.Fatalf("first authorization answered %d", status)
			}
			back := tc.run(t, e)
			recreated := tc.name == "role deleted and created again"
			var before any
			if !recreated {
				before = readCreds(t, e.b, e.s, "app", nil).Data["access_token"]
			}
			kept := storedRoleAndTokens(t, e.s)
			status, body := e.callback(t, back)
			if status != http.StatusBadRequest || !strings.Contains(body, tc.want) {
				t.Fatalf("callback answered %d, want 400 saying %q: %s", status, tc.want, body)
			}
			requireKept(t, kept, storedRoleAndTokens(t, e.s))
			if recreated {
				return
			}
			if got := readCreds(t, e.b, e.s, "app", nil).Data["access_token"]; got != before {
				t.Fatal("the role's token changed")
			}
			if _, err := e.b.currentToken(context.Background(), e.s, "app"); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// Failed callbacks are rate-limited, pasted or from a browser: both need no token.
func TestCallbackRateLimit(t *testing.T) {
	e := newCodeEnv(t)
	clock := clockOf(e.b)
	clock.Pin(time.Now())
	bad := url.Values{"code": {"not-a-code-0123456789"}, "state": {"not-a-state-0123456789"}}
	for i := range callbackBurst {
		if status, _ := e.callback(t, bad); status != http.StatusBadRequest {
			t.Fatalf("failure %d answered %d", i+1, status)
		}
	}
	if status, _ := e.callback(t, bad); status != http.StatusTooManyRequests {
		t.Fatalf("after %d failures: %d, want 429", callbackBurst, status)
	}
	good := e.browseAuthorized(t)
	if status, _ := e.callback(t, good); status != http.StatusTooManyRequests {
		t.Fatalf("a good callback while limited answered %d", status)
	}
	pasted := request(t, e.b, e.s, logical.UpdateOperation, "callback", map[string]any{"code": good.Get("code"), "state": good.Get("state")})
	if pasted.Data[logical.HTTPStatusCode] != http.StatusTooManyRequests {
		t.Fatalf("a pasted callback while limited answered %v", pasted.Data)
	}
	clock.Advance(callbackRefill)
	if status, _ := e.callback(t, good); status != http.StatusOK {
		t.Fatalf("after the refill the good callback answered %d", status)
	}
	if status, _ := e.callback(t, bad); status != http.StatusBadRequest {
		t.Fatalf("after the refill: %d", status)
	}
	if status, _ := e.callback(t, bad); status != http.StatusTooManyRequests {
		t.Fatalf("the refill allowed more than one failure: %d", status)
	}
}

// holdGrant holds token requests of one grant type open at the provider until release is closed;
// reached receives once per held request.
func holdGrant(p *testprovider.Provider, grantType string) (reached chan struct{}, release chan struct{}) {
	reached, release = make(chan struct{}, 8), make(chan struct{})
	p.Intercept = func(_ http.ResponseWriter, r *http.Request) bool {
		if r.ParseForm() == nil && r.PostForm.Get("grant_type") == grantType {
			reached <- struct{}{}
			<-release
		}
		return false
	}
	return reached, release
}

// A re-authorization that completes while a refresh of the old chain is in flight wins: the
// refresh's result is not stored over it.
func TestReauthorizeDuringHeldRefresh(t *testing.T) {
	e := newCodeEnv(t)
	if status := e.connect(t, "app"); status != http.StatusOK {
		t.Fatalf("authorization answered %d", status)
	}
	reached, release := holdGrant(e.p, "refresh_token")
	var wg sync.WaitGroup
	var rotated *logical.Response
	wg.Add(1)
	go func() {
		defer wg.Done()
		rotated, _ = requestErr(e.b, e.s, logical.UpdateOperation, "rotate/app", nil)
	}()
	<-reached
	e.p.AuthorizeSubject = "carol"
	if status := e.connect(t, "app"); status != http.StatusOK {
		t.Fatalf("re-authorization answered %d", status)
	}
	close(release)
	wg.Wait()
	if rotated == nil || !rotated.IsError() || !strings.Contains(rotated.Error().Error(), "changed") {
		t.Fatalf("the held rotate answered %v", rotated)
	}
	tok, _ := e.b.currentToken(context.Background(), e.s, "app")
	if !e.p.RefreshTokenValid(tok.RefreshToken) {
		t.Fatal("the stored refresh token is not the re-authorization's")
	}
	if issued, _ := e.p.Introspect(readCreds(t, e.b, e.s, "app", nil).Data["access_token"].(string)); issued.Subject != "carol" {
		t.Fatalf("creds serve %s's token, not the re-authorization's", issued.Subject)
	}
	if st := e.status(t, "app"); st["sub"] != "carol" {
		t.Fatalf("status: %v", st)
	}
}

// A completion whose code exchange is in flight while the role is edited or deleted stores
// nothing, and brings nothing back.
func TestCompletionRacingRoleEdit(t *testing.T) {
	for _, change := range []string{"edit", "delete"} {
		t.Run(change, func(t *testing.T) {
			e := newCodeEnv(t)
			back := e.browseAuthorized(t)
			reached, release := holdGrant(e.p, "authorization_code")
			var wg sync.WaitGroup
			var status int
			var body string
			wg.Add(1)
			go func() {
				defer wg.Done()
				status, body = e.callback(t, back)
			}()
			<-reached
			if change == "edit" {
				mustSucceed(t, request(t, e.b, e.s, logical.UpdateOperation, "roles/app", map[string]any{"scopes": "openid"}))
			} else {
				mustSucceed(t, request(t, e.b, e.s, logical.DeleteOperation, "roles/app", nil))
			}
			close(release)
			wg.Wait()
			if status != http.StatusBadRequest || !strings.Contains(body, "nothing was stored") {
				t.Fatalf("callback answered %d: %s", status, body)
			}
			for k := range e.s.snapshot(t) {
				if strings.HasPrefix(k, tokenPrefix) || (change == "delete" && strings.HasPrefix(k, rolePrefix)) {
					t.Fatalf("%s was stored", k)
				}
			}
			if change == "edit" {
				if st := e.status(t, "app"); st["authorization"] != "pending" {
					t.Fatalf("status: %v", st)
				}
			}
		})
	}
}

func TestAuthorizeInputErrors(t *testing.T) {
	e := newCodeEnv(t)
	mustSucceed(t, request(t, e.b, e.s, logical.UpdateOperation, "roles/cc", nil))
	mustFailNaming(t, request(t, e.b, e.s, logical.UpdateOperation, "authorize/cc", nil), "grant_type")
	mustFailNaming(t, request(t, e.b, e.s, logical.UpdateOperation, "authorize/none", nil), "does not exist")
	mustFailNaming(t, request(t, e.b, e.s, logical.UpdateOperation, "roles/app", map[string]any{"auth_params": "state=x"}), "auth_params")
	mustFailNaming(t, request(t, e.b, e.s, logical.UpdateOperation, "roles/app", map[string]any{"redirect_uri": "http://example.com/cb"}), "redirect_uri")
	mustSucceed(t, request(t, e.b, e.s, logical.UpdateOperation, "config", map[string]any{"redirect_uri": ""}))
	mustFailNaming(t, request(t, e.b, e.s, logical.UpdateOperation, "roles/new", map[string]any{"grant_type": "authorization_code"}), "redirect_uri")
	mustFailNaming(t, request(t, e.b, e.s, logical.UpdateOperation, "callback", map[string]any{"code": "x"}), "state is missing")
	mustFailNaming(t, request(t, e.b, e.s, logical.UpdateOperation, "callback", map[string]any{"code": []any{"a", "b"}, "state": "s"}), "code")
}
