package oauth

import (
	"html"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"

	"github.com/hashicorp/vault/sdk/logical"
)

// newFormPostEnv is newCodeEnv with role "app" in response_mode=form_post.
func newFormPostEnv(t *testing.T) *codeEnv {
	t.Helper()
	e := newCodeEnv(t)
	mustSucceed(t, request(t, e.b, e.s, logical.UpdateOperation, "roles/app", map[string]any{"response_mode": "form_post"}))
	return e
}

var (
	formTag    = regexp.MustCompile(`<form method="post" action="([^"]*)">`)
	hiddenTags = regexp.MustCompile(`<input type="hidden" name="([^"]*)" value="([^"]*)">`)
)

// formPostAuthorized starts an authorization of role app and returns what the provider's page posts.
func (e *codeEnv) formPostAuthorized(t *testing.T) url.Values {
	t.Helper()
	authURL, _ := e.authorize(t, "app")
	return browseFormPost(t, authURL)
}

// browseFormPost opens authURL as a browser would and returns the fields of the form the
// provider's page posts to the redirect URI.
func browseFormPost(t *testing.T, authURL string) url.Values {
	t.Helper()
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := client.Get(authURL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	form := formTag.FindStringSubmatch(string(body))
	if resp.StatusCode != http.StatusOK || form == nil {
		t.Fatalf("authorization endpoint answered %d, Location %q, no form to post: %s", resp.StatusCode, resp.Header.Get("Location"), body)
	}
	if action := html.UnescapeString(form[1]); action != testRedirectURI {
		t.Fatalf("the form posts to %s", action)
	}
	fields := url.Values{}
	for _, m := range hiddenTags.FindAllStringSubmatch(string(body), -1) {
		fields.Set(html.UnescapeString(m[1]), html.UnescapeString(m[2]))
	}
	return fields
}

// The browser posts the provider's form to the callback: the write answers the same HTML page
// as a GET, and authorizes the role; the form works once.
func TestFormPostFlow(t *testing.T) {
	e := newFormPostEnv(t)
	if got := mustSucceed(t, request(t, e.b, e.s, logical.ReadOperation, "roles/app", nil)).Data["response_mode"]; got != "form_post" {
		t.Fatalf("role response_mode = %v", got)
	}
	authURL, state := e.authorize(t, "app")
	if q := mustParse(t, authURL).Query(); q.Get("response_mode") != "form_post" || q.Get("response_type") != "code" {
		t.Fatalf("auth_url response_mode %q, response_type %q", q.Get("response_mode"), q.Get("response_type"))
	}
	posted := browseFormPost(t, authURL)
	if posted.Get("state") != state || posted.Get("code") == "" {
		t.Fatalf("the form carries state %q and code %q", posted.Get("state"), posted.Get("code"))
	}

	status, body := e.callbackPage(t, logical.UpdateOperation, posted)
	if status != http.StatusOK || !strings.Contains(body, "&#34;app&#34; is now connected") || !strings.Contains(body, "Content-Security-Policy") {
		t.Fatalf("form post answered %d: %s", status, body)
	}
	if st := e.status(t, "app"); st["authorization"] != "authorized" || st["sub"] != "alice" {
		t.Fatalf("status after the form post: %v", st)
	}
	if _, active := e.p.Introspect(readCreds(t, e.b, e.s, "app", nil).Data["access_token"].(string)); !active {
		t.Fatal("the token is not active")
	}

	// Posted again (a reload): the state is spent. It names no authorization any more, so the
	// answer cannot know it was a browser's: JSON.
	requests, kept := e.p.Requests(), storedRoleAndTokens(t, e.s)
	resp := request(t, e.b, e.s, logical.UpdateOperation, "callback", map[string]any{"code": posted.Get("code"), "state": posted.Get("state"), "iss": posted.Get("iss")})
	mustFailNaming(t, resp, "state is unknown")
	if e.p.Requests() != requests || len(storedRoleAndTokens(t, e.s)) != len(kept) {
		t.Fatal("a replayed form post reached the provider or changed storage")
	}
}

// A form post that fails after its state named a form_post authorization answers the HTML
// page with the reason, and stores nothing; the iss of RFC 9207 comes in the form.
func TestFormPostFailures(t *testing.T) {
	cases := []struct {
		name string
		run  func(t *testing.T, e *codeEnv) url.Values
		want string
	}{
		{"provider error", func(t *testing.T, e *codeEnv) url.Values {
			e.p.AuthorizeError = "access_denied"
			return e.formPostAuthorized(t)
		}, "error=&#34;access_denied&#34; error_description=&#34;The &lt;b&gt;user&lt;/b&gt; said no&#34;"},
		{"expired state", func(t *testing.T, e *codeEnv) url.Values {
			posted := e.formPostAuthorized(t)
			clockOf(e.b).Shift(authorizeTTL)
			return posted
		}, "expired"},
		{"code rejected", func(t *testing.T, e *codeEnv) url.Values {
			posted := e.formPostAuthorized(t)
			posted.Set("code", posted.Get("code")+"x")
			return posted
		}, "exchanging the code"},
		{"wrong iss", func(t *testing.T, e *codeEnv) url.Values {
			e.p.SendIss = true
			posted := e.formPostAuthorized(t)
			posted.Set("iss", "https://attacker.example")
			return posted
		}, "RFC 9207"},
		{"missing iss the metadata promises", func(t *testing.T, e *codeEnv) url.Values {
			e.rediscover(t, map[string]any{"authorization_response_iss_parameter_supported": true})
			return e.formPostAuthorized(t)
		}, "has no iss"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := newFormPostEnv(t)
			posted := tc.run(t, e)
			kept := storedRoleAndTokens(t, e.s)
			status, body := e.callbackPage(t, logical.UpdateOperation, posted)
			if status != http.StatusBadRequest || !strings.Contains(body, tc.want) {
				t.Fatalf("form post answered %d, want 400 saying %q: %s", status, tc.want, body)
			}
			requireKept(t, kept, storedRoleAndTokens(t, e.s))
		})
	}
	t.Run("with iss", func(t *testing.T) {
		e := newFormPostEnv(t)
		e.p.SendIss = true
		posted := e.formPostAuthorized(t)
		if posted.Get("iss") != e.p.URL {
			t.Fatalf("the form carries iss %q", posted.Get("iss"))
		}
		if status, body := e.callbackPage(t, logical.UpdateOperation, posted); status != http.StatusOK {
			t.Fatalf("form post with the provider's iss answered %d: %s", status, body)
		}
	})
}

func TestResponseModeInputErrors(t *testing.T) {
	e := newCodeEnv(t)
	if got := mustSucceed(t, request(t, e.b, e.s, logical.ReadOperation, "roles/app", nil)).Data["response_mode"]; got != "query" {
		t.Fatalf("default response_mode = %v", got)
	}
	authURL, _ := e.authorize(t, "app")
	if q := mustParse(t, authURL).Query(); q.Has("response_mode") {
		t.Fatalf("a query role's auth_url has response_mode %q", q.Get("response_mode"))
	}
	mustFailNaming(t, request(t, e.b, e.s, logical.UpdateOperation, "roles/app", map[string]any{"response_mode": "fragment"}), "response_mode")
	mustFailNaming(t, request(t, e.b, e.s, logical.UpdateOperation, "roles/app", map[string]any{"auth_params": "response_mode=form_post"}), "auth_params")
	mustFailNaming(t, request(t, e.b, e.s, logical.UpdateOperation, "roles/cc", map[string]any{"grant_type": "client_credentials", "response_mode": "form_post"}), "response_mode")
	mustFailNaming(t, request(t, e.b, e.s, logical.UpdateOperation, "roles/dev", map[string]any{"grant_type": "device_code", "response_mode": "form_post"}), "response_mode")
	mustSucceed(t, request(t, e.b, e.s, logical.UpdateOperation, "roles/cc", map[string]any{"grant_type": "client_credentials", "response_mode": "query"}))
	mustFailNaming(t, request(t, e.b, e.s, logical.UpdateOperation, "roles/cc", map[string]any{"grant_type": "authorization_code", "response_mode": "form_post", "redirect_uri": "http://example.com/cb"}), "redirect_uri")

	// A provider whose metadata lists its response modes without form_post.
	e.rediscover(t, map[string]any{"response_modes_supported": []string{"query", "fragment"}})
	resp := request(t, e.b, e.s, logical.UpdateOperation, "roles/app", map[string]any{"response_mode": "form_post"})
	mustFailNaming(t, resp, "response_mode")
	mustFailNaming(t, resp, "query, fragment")
	if got := mustSucceed(t, request(t, e.b, e.s, logical.ReadOperation, "roles/app", nil)).Data["response_mode"]; got != "query" {
		t.Fatalf("a refused write changed response_mode to %v", got)
	}
	// Metadata that lists none promises nothing either way: form_post is taken at the operator's word.
	e.rediscover(t, map[string]any{"response_modes_supported": nil})
	mustSucceed(t, request(t, e.b, e.s, logical.UpdateOperation, "roles/app", map[string]any{"response_mode": "form_post"}))
}

func mustParse(t *testing.T, s string) *url.URL {
	t.Helper()
	u, err := url.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return u
}
