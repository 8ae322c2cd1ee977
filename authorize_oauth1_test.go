package oauth

import (
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/hashicorp/vault/sdk/logical"

	"github.com/oauth-broker/vault-plugin-secrets-oauth/internal/testprovider"
)

// threeLeggedRole writes role "tw" as an oauth1 role with the three-legged flow against srv.
func threeLeggedRole(t *testing.T, srv *testprovider.OAuth1, extra map[string]any) (*backend, *faultyStorage) {
	t.Helper()
	b, s := newTestBackend(t)
	role := map[string]any{
		"grant_type": "oauth1", "consumer_key": "ck-3l", "consumer_secret": testConsumerSecret,
		"request_token_url": srv.URL + "/request_token", "authorize_url": srv.URL + "/authorize", "access_token_url": srv.URL + "/access_token",
		"redirect_uri": "https://vault.example.com/v1/oauth/callback",
	}
	for k, v := range extra {
		role[k] = v
	}
	mustSucceed(t, request(t, b, s, logical.UpdateOperation, "roles/tw", role))
	return b, s
}

// approve opens auth_url as the person's browser would and returns the callback's parameters.
func approve(t *testing.T, authURL string) url.Values {
	t.Helper()
	noFollow := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := noFollow.Get(authURL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	loc, err := url.Parse(resp.Header.Get("Location"))
	if resp.StatusCode != http.StatusFound || err != nil || !strings.HasPrefix(loc.String(), "https://vault.example.com/v1/oauth/callback?") {
		t.Fatalf("authorization answered %d, Location %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	return loc.Query()
}

func TestOAuth1ThreeLeggedFlowThroughCallback(t *testing.T) {
	srv := testprovider.NewOAuth1(t, "ck-3l", testConsumerSecret)
	b, s := threeLeggedRole(t, srv, nil)

	mustFailNaming(t, request(t, b, s, logical.UpdateOperation, "sign/tw", map[string]any{"url": srv.URL + "/r"}), "authorize/tw")
	status := mustSucceed(t, request(t, b, s, logical.ReadOperation, "roles/tw/status", nil))
	if status.Data["authorization"] != "pending" {
		t.Fatalf("status before: %v", status.Data)
	}

	started := mustSucceed(t, request(t, b, s, logical.UpdateOperation, "authorize/tw", nil))
	got := approve(t, started.Data["auth_url"].(string))
	// The browser's GET to the callback: unauthenticated, answers a page.
	page := request(t, b, s, logical.ReadOperation, "callback", map[string]any{"oauth_token": got.Get("oauth_token"), "oauth_verifier": got.Get("oauth_verifier")})
	if page.Data[logical.HTTPStatusCode] != http.StatusOK {
		t.Fatalf("callback page: %v %s", page.Data[logical.HTTPStatusCode], page.Data[logical.HTTPRawBody])
	}
	// The temporary credentials work once.
	again := request(t, b, s, logical.UpdateOperation, "callback", map[string]any{"oauth_token": got.Get("oauth_token"), "oauth_verifier": got.Get("oauth_verifier")})
	if again == nil || !again.IsError() {
		t.Fatalf("a used oauth_token completed again: %v", again)
	}

	status = mustSucceed(t, request(t, b, s, logical.ReadOperation, "roles/tw/status", nil))
	role := mustSucceed(t, request(t, b, s, logical.ReadOperation, "roles/tw", nil))
	if status.Data["authorization"] != "authorized" || role.Data["token_set"] != true || role.Data["token_secret_set"] != true {
		t.Fatalf("after the callback: status %v, role %v", status.Data, role.Data)
	}
	stored, _ := b.role(t.Context(), s, "tw")
	if !srv.TokenIssued(stored.Token) {
		t.Fatal("the role does not hold the token credentials the server issued")
	}
	assertNoSecrets(t, role, stored.TokenSecret, testConsumerSecret)

	signed := mustSucceed(t, request(t, b, s, logical.UpdateOperation, "sign/tw", map[string]any{"method": "GET", "url": srv.URL + "/1.1/account.json?x=1"}))
	req, _ := http.NewRequest(http.MethodGet, srv.URL+"/1.1/account.json?x=1", nil)
	req.Header.Set("Authorization", signed.Data["authorization"].(string))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		t.Fatalf("the server refused a request signed with the obtained token: %d", resp.StatusCode)
	}
}

func TestOAuth1ThreeLeggedOutOfBandPasted(t *testing.T) {
	srv := testprovider.NewOAuth1(t, "ck-3l", testConsumerSecret)
	b, s := threeLeggedRole(t, srv, map[string]any{"redirect_uri": ""})
	started := mustSucceed(t, request(t, b, s, logical.UpdateOperation, "authorize/tw", nil))
	authURL, _ := url.Parse(started.Data["auth_url"].(string))
	resp, err := http.Get(authURL.String())
	if err != nil {
		t.Fatal(err)
	}
	verifier := make([]byte, 128)
	n, _ := resp.Body.Read(verifier)
	resp.Body.Close()

	wrong := request(t, b, s, logical.UpdateOperation, "callback", map[string]any{"oauth_token": "not-issued", "oauth_verifier": "x"})
	if wrong == nil || !wrong.IsError() {
		t.Fatal("an unknown oauth_token completed")
	}
	done := mustSucceed(t, request(t, b, s, logical.UpdateOperation, "callback", map[string]any{"oauth_token": authURL.Query().Get("oauth_token"), "oauth_verifier": string(verifier[:n])}))
	if done.Data["role"] != "tw" || done.Data["authorized_at"] == "" {
		t.Fatalf("pasted callback: %v", done.Data)
	}
}

func TestOAuth1ThreeLeggedRefusals(t *testing.T) {
	srv := testprovider.NewOAuth1(t, "ck-3l", testConsumerSecret)
	b, s := newTestBackend(t)
	mustFailNaming(t, request(t, b, s, logical.UpdateOperation, "roles/tw", map[string]any{
		"grant_type": "oauth1", "consumer_key": "ck-3l", "consumer_secret": "x", "request_token_url": srv.URL + "/request_token",
	}), "_url")

	// A wrong consumer secret: the server refuses the temporary credential request.
	b, s = threeLeggedRole(t, srv, map[string]any{"consumer_secret": "wrong-secret-value"})
	resp := request(t, b, s, logical.UpdateOperation, "authorize/tw", nil)
	if resp == nil || !resp.IsError() || !strings.Contains(resp.Error().Error(), "HTTP 401") {
		t.Fatalf("authorize with a wrong secret: %v", resp)
	}
	assertNoSecrets(t, resp, "wrong-secret-value")

	// An imported-token role has no flow to start.
	b, s = oauth1Role(t, nil)
	mustFailNaming(t, request(t, b, s, logical.UpdateOperation, "authorize/tw", nil), "request_token_url")
}

// A role edited or deleted while the three-legged flow's access-token request is in flight
// keeps the edit: the token credentials obtained for the role as it was are not stored.
func TestOAuth1CompletionRacingRoleEdit(t *testing.T) {
	for change, write := range map[string]map[string]any{
		"consumer": {"consumer_key": "ck-other"},
		"import":   {"token": "imported-token", "token_secret": "imported-token-secret"},
		"delete":   nil,
	} {
		t.Run(change, func(t *testing.T) {
			srv := testprovider.NewOAuth1(t, "ck-3l", testConsumerSecret)
			b, s := threeLeggedRole(t, srv, nil)
			started := mustSucceed(t, request(t, b, s, logical.UpdateOperation, "authorize/tw", nil))
			got := approve(t, started.Data["auth_url"].(string))
			reached, release := make(chan struct{}, 1), make(chan struct{})
			srv.Intercept = func(_ http.ResponseWriter, r *http.Request) bool {
				if r.URL.Path == "/access_token" {
					reached <- struct{}{}
					<-release
				}
				return false
			}
			done := make(chan *logical.Response)
			go func() {
				resp, _ := requestErr(b, s, logical.UpdateOperation, "callback", map[string]any{"oauth_token": got.Get("oauth_token"), "oauth_verifier": got.Get("oauth_verifier")})
				done <- resp
			}()
			<-reached
			if write == nil {
				mustSucceed(t, request(t, b, s, logical.DeleteOperation, "roles/tw", nil))
			} else {
				mustSucceed(t, request(t, b, s, logical.UpdateOperation, "roles/tw", write))
			}
			close(release)
			if resp := <-done; resp == nil || !resp.IsError() || !strings.Contains(resp.Error().Error(), "nothing was stored") {
				t.Fatalf("callback answered %v", resp)
			}
			stored, err := b.role(t.Context(), s, "tw")
			if err != nil {
				t.Fatal(err)
			}
			switch {
			case write == nil && stored != nil:
				t.Fatal("the deleted role was stored again")
			case write != nil && (stored == nil || srv.TokenIssued(stored.Token)):
				t.Fatalf("the flow's token credentials were stored over the edit: %+v", stored)
			case change == "import" && (stored.Token != "imported-token" || stored.TokenSecret != "imported-token-secret"):
				t.Fatal("the imported token credentials were replaced")
			case change == "consumer" && stored.ConsumerKey != "ck-other":
				t.Fatal("the edit was lost")
			}
		})
	}
}
