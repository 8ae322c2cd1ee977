//go:build e2e

package e2e

// Issue 13 end to end: the authorization code grant with PKCE and the device authorization
// grant, in a real Vault against the real provider, whose sign-in and consent pages a scripted
// browser walks (a cookie jar, redirects followed, forms submitted as a browser submits them).
// The browser check in a real Chromium is scripts/browser-check.sh.

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"
	"golang.org/x/net/html"

	"github.com/oauth-broker/vault-plugin-secrets-oauth/internal/e2eharness"
)

// The provider's user and the role every test connects.
const (
	flowUser     = "alice"
	flowPassword = "alice-password"
	flowRole     = "mail"
)

func TestUserFlows(t *testing.T) {
	t.Run("authorization_code", func(t *testing.T) { t.Parallel(); testAuthorizationCodeIntoVault(t) })
	t.Run("pasted", func(t *testing.T) { t.Parallel(); testAuthorizationCodePasted(t) })
	t.Run("form_post", func(t *testing.T) { t.Parallel(); testAuthorizationCodeFormPost(t) })
	t.Run("errors", func(t *testing.T) { t.Parallel(); testAuthorizationCodeErrors(t) })
	t.Run("device", func(t *testing.T) { t.Parallel(); testDeviceFlow(t) })
	t.Run("device_denied", func(t *testing.T) { t.Parallel(); testDeviceFlowDenied(t) })
	t.Run("device_restart", func(t *testing.T) { t.Parallel(); testDeviceFlowSurvivesRestart(t) })
}

// ---- the scripted browser ----

// browser is a user agent without scripts: it keeps cookies, follows redirects on the
// provider and on Vault, and submits forms. A redirect elsewhere (a redirect URI nobody serves
// here, like an operator's loopback URI) is not followed: the page then carries its location.
type browser struct {
	t      testing.TB
	client *http.Client
	serves map[string]bool // host:port whose redirects are followed
}

// page is where the browser ended after a navigation.
type page struct {
	url      *url.URL // the last URL requested
	status   int
	header   http.Header
	body     string
	doc      *html.Node // nil unless the answer is HTML
	location *url.URL   // a redirect that was not followed
	posted   url.Values // the form posted to url, when the browser ran a page's script that posts one
}

func newBrowser(t testing.TB, vaultAddr string) *browser {
	jar, err := cookiejar.New(nil)
	must(t, err)
	b := &browser{t: t, serves: map[string]bool{}}
	for _, u := range []string{env.ProviderURL, vaultAddr} {
		pu, err := url.Parse(u)
		must(t, err)
		b.serves[pu.Host] = true
	}
	b.client = &http.Client{
		Jar:     jar,
		Timeout: 30 * time.Second,
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			if len(via) >= 20 {
				return errors.New("more than 20 redirects")
			}
			if !b.serves[req.URL.Host] {
				return http.ErrUseLastResponse
			}
			return nil
		},
	}
	return b
}

func (b *browser) get(target string) page {
	b.t.Helper()
	req, err := http.NewRequest(http.MethodGet, target, nil)
	must(b.t, err)
	return b.do(req)
}

func (b *browser) do(req *http.Request) page {
	b.t.Helper()
	req.Header.Set("Accept", "text/html")
	resp, err := b.client.Do(req)
	if err != nil {
		b.t.Fatalf("browser: %s %s: %v", req.Method, req.URL.Path, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	must(b.t, err)
	p := page{url: resp.Request.URL, status: resp.StatusCode, header: resp.Header, body: string(raw)}
	if loc := resp.Header.Get("Location"); loc != "" && resp.StatusCode/100 == 3 {
		p.location, err = resp.Request.URL.Parse(loc)
		must(b.t, err)
	}
	if strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") {
		p.doc, err = html.Parse(strings.NewReader(p.body))
		must(b.t, err)
	}
	return p
}

// submit fills the named fields of the form with that id (each must exist) and submits it with
// the button whose label is button, as a browser does: the form's fields and the pressed
// button's name=value, to the form's action with its method.
func (b *browser) submit(p page, formID, button string, fill map[string]string) page {
	b.t.Helper()
	if p.doc == nil {
		b.t.Fatalf("browser: %s (HTTP %d) is not an HTML page, no form %q to submit", p.url.Path, p.status, formID)
	}
	form := findNode(p.doc, func(n *html.Node) bool { return n.Data == "form" && attr(n, "id") == formID })
	if form == nil {
		b.t.Fatalf("browser: no form %q on %s (HTTP %d): %s", formID, p.url.Path, p.status, visibleText(p.doc))
	}
	owned := func(n *html.Node) bool {
		if f := attr(n, "form"); f != "" {
			return f == formID
		}
		for a := n.Parent; a != nil; a = a.Parent {
			if a == form {
				return true
			}
		}
		return false
	}
	values := url.Values{}
	var pressed *html.Node
	walk(p.doc, func(n *html.Node) {
		if n.Type != html.ElementNode || !owned(n) {
			return
		}
		isButton := n.Data == "button" && attr(n, "type") != "button" && attr(n, "type") != "reset" ||
			n.Data == "input" && attr(n, "type") == "submit"
		switch {
		case isButton:
			label := strings.TrimSpace(visibleText(n))
			if n.Data == "input" {
				label = attr(n, "value")
			}
			if label == button {
				pressed = n
			}
		case n.Data == "input" && attr(n, "name") != "":
			switch attr(n, "type") {
			case "checkbox", "radio":
				if _, checked := attrOK(n, "checked"); checked {
					values.Add(attr(n, "name"), attr(n, "value"))
				}
			default:
				values.Set(attr(n, "name"), attr(n, "value"))
			}
		}
	})
	if pressed == nil {
		b.t.Fatalf("browser: form %q on %s has no button %q", formID, p.url.Path, button)
	}
	for name, v := range fill {
		if _, ok := values[name]; !ok {
			b.t.Fatalf("browser: form %q on %s has no field %q", formID, p.url.Path, name)
		}
		values.Set(name, v)
	}
	if name := attr(pressed, "name"); name != "" {
		values.Add(name, attr(pressed, "value"))
	}
	action, err := p.url.Parse(attr(form, "action"))
	must(b.t, err)
	var req *http.Request
	if strings.EqualFold(attr(form, "method"), "post") {
		req, err = http.NewRequest(http.MethodPost, action.String(), strings.NewReader(values.Encode()))
		must(b.t, err)
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	} else {
		action.RawQuery = values.Encode()
		req, err = http.NewRequest(http.MethodGet, action.String(), nil)
		must(b.t, err)
	}
	return b.do(req)
}

func attrOK(n *html.Node, key string) (string, bool) {
	for _, a := range n.Attr {
		if a.Key == key {
			return a.Val, true
		}
	}
	return "", false
}

func attr(n *html.Node, key string) string {
	v, _ := attrOK(n, key)
	return v
}

func walk(n *html.Node, visit func(*html.Node)) {
	visit(n)
	for c := n.FirstChild; c != nil; c = c.NextSibling {
		walk(c, visit)
	}
}

func findNode(root *html.Node, match func(*html.Node) bool) *html.Node {
	var found *html.Node
	walk(root, func(n *html.Node) {
		if found == nil && n.Type == html.ElementNode && match(n) {
			found = n
		}
	})
	return found
}

// visibleText is the text of n without scripts and styles, blanks collapsed.
func visibleText(n *html.Node) string {
	if n == nil {
		return ""
	}
	var b strings.Builder
	var rec func(*html.Node)
	rec = func(n *html.Node) {
		if n.Type == html.ElementNode && (n.Data == "script" || n.Data == "style") {
			return
		}
		if n.Type == html.TextNode {
			b.WriteString(n.Data)
			b.WriteByte(' ')
		}
		for c := n.FirstChild; c != nil; c = c.NextSibling {
			rec(c)
		}
	}
	rec(n)
	return strings.Join(strings.Fields(b.String()), " ")
}

// autoSubmit does what the script of a page with an auto-submitting form does (the page of the
// form_post response mode): document.forms[0].submit(), which sends the form's fields and no
// button, as application/x-www-form-urlencoded to the form's action.
func (b *browser) autoSubmit(p page) page {
	b.t.Helper()
	var form *html.Node
	if p.doc != nil {
		form = findNode(p.doc, func(n *html.Node) bool { return n.Data == "form" })
	}
	if form == nil || !strings.EqualFold(attr(form, "method"), "post") || findNode(p.doc, func(n *html.Node) bool { return n.Data == "script" }) == nil {
		b.t.Fatalf("browser: %s (HTTP %d) is no page that posts a form by script: %s", p.url.Path, p.status, p.body)
	}
	values := url.Values{}
	walk(form, func(n *html.Node) {
		if n.Type == html.ElementNode && n.Data == "input" && attr(n, "name") != "" {
			values.Set(attr(n, "name"), attr(n, "value"))
		}
	})
	action, err := p.url.Parse(attr(form, "action"))
	must(b.t, err)
	req, err := http.NewRequest(http.MethodPost, action.String(), strings.NewReader(values.Encode()))
	must(b.t, err)
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	next := b.do(req)
	next.posted = values
	return next
}

// signIn walks from authURL through the provider's sign-in page as alice to the consent page.
func (b *browser) signIn(authURL string) page {
	b.t.Helper()
	p := b.get(authURL)
	if p.status != http.StatusOK || !strings.Contains(visibleText(p.doc), "Sign in") {
		b.t.Fatalf("browser: the auth_url did not lead to the sign-in page: %s HTTP %d: %s", p.url.Path, p.status, visibleText(p.doc))
	}
	p = b.submit(p, "login", "Sign in", map[string]string{"username": flowUser, "password": flowPassword})
	if p.status != http.StatusOK || !strings.Contains(visibleText(p.doc), "Signed in as "+flowUser) {
		b.t.Fatalf("browser: signing in did not lead to the consent page: %s HTTP %d: %s", p.url.Path, p.status, visibleText(p.doc))
	}
	return p
}

// approveDevice enters the user code on the provider's device page, confirms it, signs in and
// answers the consent page with Allow (or aborts at the confirmation when deny is set).
func (b *browser) approveDevice(verificationURI, userCode string, deny bool) page {
	b.t.Helper()
	p := b.get(verificationURI)
	p = b.submit(p, "op.deviceInputForm", "Continue", map[string]string{"user_code": userCode})
	if !strings.Contains(visibleText(p.doc), userCode) {
		b.t.Fatalf("browser: the confirmation page does not show the user code: HTTP %d: %s", p.status, visibleText(p.doc))
	}
	if deny {
		return b.submit(p, "op.deviceConfirmForm", "Abort", nil)
	}
	p = b.submit(p, "op.deviceConfirmForm", "Continue", nil)
	p = b.submit(p, "login", "Sign in", map[string]string{"username": flowUser, "password": flowPassword})
	p = b.submit(p, "consent", "Allow", nil)
	if p.status != http.StatusOK || !strings.Contains(visibleText(p.doc), "Device connected") {
		b.t.Fatalf("browser: the device approval did not end on the provider's success page: %s HTTP %d: %s", p.url.Path, p.status, visibleText(p.doc))
	}
	return p
}

// ---- set-up ----

// userFlowRole mounts the plugin (configured by discovery), registers a provider client for
// the grant and writes role "mail" for it. redirectURI is used for authorization_code only.
func userFlowRole(t *testing.T, grant, scopes, redirectURI string, extra map[string]any) (mount, clientID string) {
	t.Helper()
	mount = newMount(t, "flows")
	mustWrite(t, env.client, mount+"/config", map[string]any{"issuer": env.ProviderURL})
	clientID = userFlowClient(t, env.client, mount, grant, scopes, redirectURI, extra)
	return mount, clientID
}

// userFlowClient registers a provider client for the grant ("authorization_code" or
// "device_code") and the scopes (space-separated, as in OAuth) and writes role "mail" on mount.
func userFlowClient(t *testing.T, c *api.Client, mount, grant, scopes, redirectURI string, extra map[string]any) string {
	t.Helper()
	md := map[string]any{"scope": scopes}
	role := map[string]any{"grant_type": grant, "scopes": strings.ReplaceAll(scopes, " ", ",")}
	if grant == "authorization_code" {
		md["grant_types"] = []string{grant, "refresh_token"}
		md["response_types"] = []string{"code"}
		md["redirect_uris"] = []string{redirectURI}
		role["redirect_uri"] = redirectURI
	} else {
		md["grant_types"] = []string{"urn:ietf:params:oauth:grant-type:device_code", "refresh_token"}
	}
	id, secret := registerClient(t, md)
	role["client_id"], role["client_secret"] = id, secret
	for k, v := range extra {
		role[k] = v
	}
	mustWrite(t, c, mount+"/roles/"+flowRole, role)
	// Everything the provider issued to this client or received from it, once the test is done.
	t.Cleanup(func() { rememberProviderSecrets(t, id) })
	return id
}

func vaultCallback(vaultAddr, mount string) string {
	return vaultAddr + "/v1/" + mount + "/callback"
}

// authorize starts the authorization and checks the auth_url it answers.
func authorize(t *testing.T, c *api.Client, mount, clientID, redirectURI, scopes string) (authURL, state string) {
	t.Helper()
	started := time.Now()
	d := mustWrite(t, c, mount+"/authorize/"+flowRole, map[string]any{}).Data
	authURL, state = str(d["auth_url"]), str(d["state"])
	u, err := url.Parse(authURL)
	must(t, err)
	q := u.Query()
	if got := u.Scheme + "://" + u.Host + u.Path; got != env.Discovery.AuthorizationEndpoint {
		t.Errorf("auth_url goes to %s, want the discovered authorization endpoint %s", got, env.Discovery.AuthorizationEndpoint)
	}
	for k, want := range map[string]string{
		"response_type": "code", "client_id": clientID, "redirect_uri": redirectURI, "scope": scopes,
		"state": state, "code_challenge_method": "S256",
	} {
		if got := q.Get(k); got != want {
			t.Errorf("auth_url %s = %q, want %q", k, got, want)
		}
	}
	if len(state) < 43 {
		t.Errorf("state has %d characters, want at least 43 (256 bits)", len(state))
	}
	if n := len(q.Get("code_challenge")); n != 43 {
		t.Errorf("code_challenge has %d characters, want 43 (base64url of a SHA-256)", n)
	}
	if hasOpenID := strings.Contains(" "+scopes+" ", " openid "); (q.Get("nonce") != "") != hasOpenID {
		t.Errorf("auth_url nonce %q with scopes %q: want one exactly when openid is asked for", q.Get("nonce"), scopes)
	}
	expires := statusTime(t, d, "expires_at")
	if left := expires.Sub(started); left < 9*time.Minute || left > 11*time.Minute {
		t.Errorf("expires_at %v is %v away, want about 10 minutes", expires, left)
	}
	return authURL, state
}

// checkCallbackPage checks the page Vault's callback answered the browser: status, an HTML
// page under a strict Content-Security-Policy that says want, and never echoes the code or
// the state the browser brought.
func checkCallbackPage(t *testing.T, p page, mount string, status int, want string) {
	t.Helper()
	if p.url.Path != "/v1/"+mount+"/callback" {
		t.Fatalf("the browser ended at %s (HTTP %d), not at Vault's callback", p.url.Path, p.status)
	}
	params := p.url.Query()
	for k, v := range p.posted {
		params[k] = v
	}
	code, state := params.Get("code"), params.Get("state")
	rememberSecret(kindAuthCode, code)
	recordText("callback page "+p.url.Path, p.body)
	text := visibleText(p.doc)
	if p.status != status {
		t.Errorf("callback: HTTP %d, want %d: %s", p.status, status, text)
	}
	if ct := p.header.Get("Content-Type"); !strings.HasPrefix(ct, "text/html") {
		t.Errorf("callback: Content-Type %q, want text/html", ct)
	}
	if csp := contentSecurityPolicy(p); !strings.Contains(csp, "default-src 'none'") {
		t.Errorf("callback: Content-Security-Policy %q, want default-src 'none'", csp)
	}
	if p.doc == nil || !strings.Contains(text, want) {
		t.Errorf("callback page lacks %q: %s", want, text)
	}
	for what, v := range map[string]string{"code": code, "state": state} {
		if v != "" && strings.Contains(p.body, v) {
			t.Errorf("callback page echoes the %s", what)
		}
	}
}

// contentSecurityPolicy is the page's policy: its header, else its <meta http-equiv> (Vault passes
// a plugin's Content-Type and status, not its other headers).
func contentSecurityPolicy(p page) string {
	if csp := p.header.Get("Content-Security-Policy"); csp != "" || p.doc == nil {
		return csp
	}
	meta := findNode(p.doc, func(n *html.Node) bool {
		return n.Data == "meta" && strings.EqualFold(attr(n, "http-equiv"), "Content-Security-Policy")
	})
	if meta == nil {
		return ""
	}
	return attr(meta, "content")
}

// credsAfter checks that creds work for the user: the access token is active at the provider
// for the client and for alice.
func credsAfter(t *testing.T, c *api.Client, mount, clientID string) string {
	t.Helper()
	s, in := readActiveToken(t, c, mount+"/creds/"+flowRole, clientID)
	if str(in["sub"]) != flowUser {
		t.Errorf("the access token's subject is %q, want %q", str(in["sub"]), flowUser)
	}
	return str(s.Data["access_token"])
}

// checkRotation: after the authorization, the role lives on its refresh token like a
// refresh_token role: rotate and a forced read each spend one refresh token at the provider and
// store the one it rotated to (reusing a spent one would revoke the whole grant). The forced read
// is repeated until it gets a new token: a token a grant just obtained is served for 5 seconds.
func checkRotation(t *testing.T, c *api.Client, mount, clientID string) {
	t.Helper()
	if got := env.RefreshTokenCounts(t, clientID); got != (refreshTokens{Active: 1}) {
		t.Fatalf("refresh tokens at the provider after the authorization: %+v, want one active", got)
	}
	before := str(mustRead(t, c, mount+"/creds/"+flowRole).Data["access_token"])
	mustWrite(t, c, mount+"/rotate/"+flowRole, map[string]any{})
	rotated := credsAfter(t, c, mount, clientID)
	if rotated == before {
		t.Error("rotate kept the access token")
	}
	if got := env.RefreshTokenCounts(t, clientID); got != (refreshTokens{Active: 1, Consumed: 1}) {
		t.Errorf("refresh tokens at the provider after rotate: %+v, want one active, one spent", got)
	}
	var forced *api.Secret
	if !everySecond(time.Now().Add(20*time.Second), func() bool {
		s, code, msg := vaultRead(t, c, mount+"/creds/"+flowRole, url.Values{"min_seconds": {"86400"}})
		if code != http.StatusOK || s == nil {
			t.Fatalf("a forced refresh after rotate: HTTP %d: %s", code, msg)
		}
		forced = s
		return str(s.Data["access_token"]) != rotated
	}) {
		t.Fatal("a forced refresh served the rotated token for 20 s")
	}
	if in := introspect(t, str(forced.Data["access_token"])); in["active"] != true || str(in["sub"]) != flowUser {
		t.Errorf("the token of the forced refresh is not active for %s: %v", flowUser, in)
	}
	if got := env.RefreshTokenCounts(t, clientID); got != (refreshTokens{Active: 1, Consumed: 2}) {
		t.Errorf("refresh tokens at the provider after a forced refresh: %+v, want one active, two spent", got)
	}
}

type refreshTokens = e2eharness.RefreshTokens

// flowStatus reads the role's status fields of the user-delegated grants.
func flowStatus(t *testing.T, c *api.Client, mount string) map[string]any {
	t.Helper()
	return mustRead(t, c, mount+"/roles/"+flowRole+"/status").Data
}

// credsRefused checks that creds answers 400 naming what to run.
func credsRefused(t *testing.T, c *api.Client, mount, run string) {
	t.Helper()
	_, code, msg := vaultRead(t, c, mount+"/creds/"+flowRole, nil)
	if code != http.StatusBadRequest || !strings.Contains(msg, mount+"/"+run+"/"+flowRole) {
		t.Errorf("creds before the authorization: HTTP %d %q, want 400 naming %s/%s/%s", code, msg, mount, run, flowRole)
	}
}

// ---- authorization code ----

// testAuthorizationCodeIntoVault: auth_url, sign-in and consent at the provider, its redirect
// into Vault's unauthenticated callback, then creds for alice, and rotation as usual.
func testAuthorizationCodeIntoVault(t *testing.T) {
	c := env.client
	mount := newMount(t, "flows")
	redirect := vaultCallback(env.vaultAddr, mount)
	mustWrite(t, c, mount+"/config", map[string]any{"issuer": env.ProviderURL})
	cfg := mustRead(t, c, mount+"/config").Data
	if str(cfg["auth_url"]) != env.Discovery.AuthorizationEndpoint || str(cfg["device_auth_url"]) != env.Discovery.DeviceEndpoint {
		t.Errorf("config: auth_url %q, device_auth_url %q; want the discovered %q, %q",
			cfg["auth_url"], cfg["device_auth_url"], env.Discovery.AuthorizationEndpoint, env.Discovery.DeviceEndpoint)
	}
	const scopes = "openid read"
	clientID := userFlowClient(t, c, mount, "authorization_code", scopes, redirect,
		map[string]any{"auth_params": "access_type=offline,prompt=consent"}) // as the CLI sends it

	credsRefused(t, c, mount, "authorize")
	authURL, _ := authorize(t, c, mount, clientID, redirect, scopes)
	if q := mustParseURL(t, authURL).Query(); q.Get("access_type") != "offline" || q.Get("prompt") != "consent" {
		t.Errorf("auth_url lacks the role's auth_params: access_type=%q prompt=%q", q.Get("access_type"), q.Get("prompt"))
	}
	if st := flowStatus(t, c, mount); str(st["authorization"]) != "pending" {
		t.Errorf("status after authorize: authorization %q, want pending", st["authorization"])
	}

	b := newBrowser(t, env.vaultAddr)
	started := time.Now()
	p := b.submit(b.signIn(authURL), "consent", "Allow", nil)
	t.Logf("sign-in, consent and Vault's callback took %v", time.Since(started).Round(time.Millisecond))
	if p.url.Query().Get("iss") != env.ProviderURL {
		t.Errorf("the provider's redirect carried iss %q, want %q (RFC 9207)", p.url.Query().Get("iss"), env.ProviderURL)
	}
	checkCallbackPage(t, p, mount, http.StatusOK, flowRole)

	credsAfter(t, c, mount, clientID)
	st := flowStatus(t, c, mount)
	if str(st["authorization"]) != "authorized" || str(st["sub"]) != flowUser || statusTime(t, st, "authorized_at").Before(started.Truncate(time.Second)) {
		t.Errorf("status after the callback: authorization %q, sub %q, authorized_at %q; want authorized, %s, now",
			st["authorization"], st["sub"], st["authorized_at"], flowUser)
	}
	checkRotation(t, c, mount, clientID)
}

// testAuthorizationCodePasted: a redirect URI that is not Vault (an operator's loopback URI):
// the browser stops there and the operator writes code and state to callback.
func testAuthorizationCodePasted(t *testing.T) {
	const redirect = "http://127.0.0.1:9/oauth/callback" // the discard port: nothing answers
	const scopes = "read"                                // no openid: no ID token, no sub
	c := env.client
	mount, clientID := userFlowRole(t, "authorization_code", scopes, redirect, nil)
	authURL, state := authorize(t, c, mount, clientID, redirect, scopes)

	b := newBrowser(t, env.vaultAddr)
	p := b.submit(b.signIn(authURL), "consent", "Allow", nil)
	if p.location == nil || p.location.Scheme+"://"+p.location.Host+p.location.Path != redirect {
		t.Fatalf("the provider did not redirect to %s: HTTP %d at %s (location %v)", redirect, p.status, p.url.Path, p.location)
	}
	q := p.location.Query()
	code := q.Get("code")
	rememberSecret(kindAuthCode, code)
	if code == "" || q.Get("state") != state {
		t.Fatalf("the redirect lacks the code or carries another state (error %q)", q.Get("error"))
	}

	// As the README shows it: code and state from the address bar (a pasted iss is optional).
	resp := mustWrite(t, c, mount+"/callback", map[string]any{"code": code, "state": state})
	if resp == nil || str(resp.Data["role"]) != flowRole || str(resp.Data["authorized_at"]) == "" {
		t.Fatalf("pasted callback answered %v, want role %s and authorized_at", resp, flowRole)
	}
	if sub, ok := resp.Data["sub"]; ok && str(sub) != "" {
		t.Errorf("pasted callback answered sub %q without an ID token", sub)
	}
	credsAfter(t, c, mount, clientID)

	// The same code and state again, with the redirect's iss: the state was spent, nothing changes.
	before := env.ProviderStats(t).ByClient[clientID]
	if _, code, msg := vaultWrite(t, c, mount+"/callback", map[string]any{"code": code, "state": state, "iss": q.Get("iss")}); code != http.StatusBadRequest {
		t.Errorf("a pasted callback replayed: HTTP %d %q, want 400", code, msg)
	}
	if after := env.ProviderStats(t).ByClient[clientID]; after != before {
		t.Errorf("a replayed pasted callback reached the provider (%d token requests, %d before)", after, before)
	}
}

// testAuthorizationCodeFormPost: with response_mode=form_post the provider's answer is a page
// whose script posts code, state and iss to Vault's callback; the browser lands on the same page
// as with a redirect, creds work, and neither the code nor the state is anywhere in clear in
// Vault's logs: the audited post has no query in its request_uri (Vault writes none) and its
// data HMACed.
func testAuthorizationCodeFormPost(t *testing.T) {
	c := env.client
	mount := newMount(t, "flows")
	redirect := vaultCallback(env.vaultAddr, mount)
	mustWrite(t, c, mount+"/config", map[string]any{"issuer": env.ProviderURL})
	const scopes = "openid read"
	clientID := userFlowClient(t, c, mount, "authorization_code", scopes, redirect,
		map[string]any{"auth_params": "prompt=consent", "response_mode": "form_post"})
	if got := str(mustRead(t, c, mount+"/roles/"+flowRole).Data["response_mode"]); got != "form_post" {
		t.Errorf("role response_mode %q, want form_post", got)
	}
	authURL, state := authorize(t, c, mount, clientID, redirect, scopes)
	if got := mustParseURL(t, authURL).Query().Get("response_mode"); got != "form_post" {
		t.Errorf("auth_url response_mode %q, want form_post", got)
	}

	b := newBrowser(t, env.vaultAddr)
	p := b.submit(b.signIn(authURL), "consent", "Allow", nil)
	if p.url.Host == mustParseURL(t, env.vaultAddr).Host || p.location != nil {
		t.Fatalf("the provider's answer to consent is no form_post page: HTTP %d at %s (location %v)", p.status, p.url, p.location)
	}
	p = b.autoSubmit(p)
	if p.posted.Get("state") != state || p.posted.Get("iss") != env.ProviderURL || p.posted.Get("code") == "" {
		t.Errorf("the provider's form posted state %v, iss %q and a code %v; want the authorize state, %q and a code",
			p.posted.Get("state") == state, p.posted.Get("iss"), p.posted.Get("code") != "", env.ProviderURL)
	}
	if p.url.RawQuery != "" {
		t.Errorf("the form was posted to a URL with a query")
	}
	checkCallbackPage(t, p, mount, http.StatusOK, flowRole)
	credsAfter(t, c, mount, clientID)
	if st := flowStatus(t, c, mount); str(st["authorization"]) != "authorized" || str(st["sub"]) != flowUser {
		t.Errorf("status after the form post: authorization %q, sub %q", st["authorization"], st["sub"])
	}
	checkFormPostAudited(t, mount, p.posted.Get("code"), state)
}

// checkFormPostAudited: the audit log has the form post to the mount's callback, answered, with
// no query in its request_uri and the code and state HMACed; neither is in clear in the audit
// log or Vault's server log.
func checkFormPostAudited(t *testing.T, mount, code, state string) {
	t.Helper()
	var audit []byte
	var posts int
	if !everySecond(time.Now().Add(10*time.Second), func() bool {
		var err error
		audit, err = os.ReadFile(filepath.Join(env.StateDir, "audit.log"))
		must(t, err)
		posts = 0
		for _, line := range bytes.Split(audit, []byte("\n")) {
			var e struct {
				Type    string `json:"type"`
				Request struct {
					Operation  string         `json:"operation"`
					Path       string         `json:"path"`
					RequestURI string         `json:"request_uri"`
					Data       map[string]any `json:"data"`
				} `json:"request"`
			}
			if json.Unmarshal(line, &e) != nil || e.Request.Path != mount+"/callback" || e.Request.Operation != "update" {
				continue
			}
			if strings.Contains(e.Request.RequestURI, "?") {
				t.Errorf("audited request_uri of the form post has a query: %q", e.Request.RequestURI)
			}
			for _, k := range []string{"code", "state"} {
				if v := str(e.Request.Data[k]); !strings.HasPrefix(v, "hmac-sha256:") {
					t.Errorf("audited %s of the form post is not an HMAC: %q", k, v[:min(len(v), 12)])
				}
			}
			if e.Type == "response" {
				posts++
			}
		}
		return posts > 0
	}) {
		t.Fatalf("no answered form post to %s/callback in the audit log within 10 s", mount)
	}
	server, err := os.ReadFile(filepath.Join(env.StateDir, "vault.log"))
	must(t, err)
	for name, log := range map[string][]byte{"audit.log": audit, "vault.log": server} {
		for what, v := range map[string]string{"code": code, "state": state} {
			if v == "" {
				continue
			}
			if bytes.Contains(log, []byte(v)) || bytes.Contains(log, []byte(url.QueryEscape(v))) {
				t.Errorf("%s holds the form post's %s in clear", name, what)
			}
		}
	}
}

// testAuthorizationCodeErrors: creds before authorization, consent denied, an unknown state
// and a replayed callback each end in a 400 page, and none changes the role.
func testAuthorizationCodeErrors(t *testing.T) {
	c := env.client
	mount := newMount(t, "flows")
	redirect := vaultCallback(env.vaultAddr, mount)
	mustWrite(t, c, mount+"/config", map[string]any{"issuer": env.ProviderURL})
	const scopes = "openid read"
	clientID := userFlowClient(t, c, mount, "authorization_code", scopes, redirect, map[string]any{"auth_params": []string{"prompt=consent"}})
	credsRefused(t, c, mount, "authorize")

	// Denied at the consent page: the provider sends error=access_denied to Vault.
	authURL, _ := authorize(t, c, mount, clientID, redirect, scopes)
	b := newBrowser(t, env.vaultAddr)
	p := b.submit(b.signIn(authURL), "abort", "Deny", nil)
	if p.url.Query().Get("error") != "access_denied" {
		t.Fatalf("denying consent brought error %q to Vault, want access_denied", p.url.Query().Get("error"))
	}
	checkCallbackPage(t, p, mount, http.StatusBadRequest, "access_denied")
	credsRefused(t, c, mount, "authorize")

	// A state Vault never issued, with a code the provider did issue.
	authURL, _ = authorize(t, c, mount, clientID, redirect, scopes)
	b = newBrowser(t, env.vaultAddr)
	b.serves = map[string]bool{mustParseURL(t, env.ProviderURL).Host: true} // stop before Vault
	p = b.submit(b.signIn(authURL), "consent", "Allow", nil)
	if p.location == nil {
		t.Fatalf("consent did not redirect: HTTP %d at %s", p.status, p.url.Path)
	}
	good := *p.location
	forged := good
	fq := forged.Query()
	fq.Set("state", "forged-"+randSuffix()+randSuffix()+randSuffix()+randSuffix())
	forged.RawQuery = fq.Encode()
	stats := env.ProviderStats(t).ByClient[clientID]
	checkCallbackPage(t, newBrowser(t, env.vaultAddr).get(forged.String()), mount, http.StatusBadRequest, "")
	if n := env.ProviderStats(t).ByClient[clientID]; n != stats {
		t.Errorf("a callback with an unknown state reached the provider (%d token requests, %d before)", n, stats)
	}
	credsRefused(t, c, mount, "authorize")

	// The real redirect completes it; the same callback again is refused and changes nothing.
	checkCallbackPage(t, newBrowser(t, env.vaultAddr).get(good.String()), mount, http.StatusOK, flowRole)
	token := credsAfter(t, c, mount, clientID)
	stats = env.ProviderStats(t).ByClient[clientID]
	checkCallbackPage(t, newBrowser(t, env.vaultAddr).get(good.String()), mount, http.StatusBadRequest, "")
	if n := env.ProviderStats(t).ByClient[clientID]; n != stats {
		t.Errorf("a replayed callback reached the provider (%d token requests, %d before)", n, stats)
	}
	if got := str(mustRead(t, c, mount+"/creds/"+flowRole).Data["access_token"]); got != token {
		t.Error("a replayed callback changed the role's token")
	}
	if got := env.RefreshTokenCounts(t, clientID); got != (refreshTokens{Active: 1}) {
		t.Errorf("refresh tokens at the provider after a replayed callback: %+v, want the one active", got)
	}
}

func mustParseURL(t testing.TB, s string) *url.URL {
	t.Helper()
	u, err := url.Parse(s)
	must(t, err)
	return u
}

// ---- device flow ----

// deviceStart starts the device authorization and checks its answer.
func deviceStart(t *testing.T, c *api.Client, mount string) (userCode, verificationURI string, interval time.Duration) {
	t.Helper()
	d := mustWrite(t, c, mount+"/device/"+flowRole, map[string]any{}).Data
	userCode, verificationURI = str(d["user_code"]), str(d["verification_uri"])
	if userCode == "" || !strings.HasPrefix(verificationURI, env.ProviderURL+"/") {
		t.Fatalf("device answered user_code %q, verification_uri %q", userCode, verificationURI)
	}
	if complete := str(d["verification_uri_complete"]); !strings.HasPrefix(complete, verificationURI+"?") {
		t.Errorf("verification_uri_complete %q does not extend %q", complete, verificationURI)
	}
	if n := num(t, d["expires_in"], "expires_in"); n <= 0 || n > 600 {
		t.Errorf("expires_in %d, want the provider's 600 or less", n)
	}
	if _, ok := d["device_code"]; ok {
		t.Error("device answered the device_code, which only the plugin may hold")
	}
	interval = time.Duration(num(t, d["interval"], "interval")) * time.Second
	if interval < time.Second {
		t.Errorf("interval %v", interval)
	}
	return userCode, verificationURI, interval
}

// waitStatus polls the role's status until done returns true, for at most limit.
func waitStatus(t *testing.T, c *api.Client, mount string, limit time.Duration, what string, done func(map[string]any) bool) map[string]any {
	t.Helper()
	var st map[string]any
	if !everySecond(time.Now().Add(limit), func() bool { st = flowStatus(t, c, mount); return done(st) }) {
		t.Fatalf("%s: not within %v; status %v", what, limit, st)
	}
	return st
}

// testDeviceFlow: Vault polls by itself while the user approves on the provider's device page;
// creds work within the interval plus a few seconds of the approval, for alice, and the refresh
// token rotates as usual.
func testDeviceFlow(t *testing.T) {
	c := env.client
	const scopes = "openid read"
	mount, clientID := userFlowRole(t, "device_code", scopes, "", nil)
	credsRefused(t, c, mount, "device")

	userCode, verificationURI, interval := deviceStart(t, c, mount)
	waitStatus(t, c, mount, interval+15*time.Second, "the plugin's first poll", func(st map[string]any) bool {
		return str(st["authorization"]) == "pending" && str(st["last_poll"]) == "authorization_pending"
	})

	newBrowser(t, env.vaultAddr).approveDevice(verificationURI, userCode, false)
	approved := time.Now()
	var s *api.Secret
	if !everySecond(approved.Add(interval+15*time.Second), func() bool {
		var code int
		s, code, _ = vaultRead(t, c, mount+"/creds/"+flowRole, nil)
		return code == http.StatusOK
	}) {
		t.Fatalf("creds did not work within %v of the approval; status %v", interval+15*time.Second, flowStatus(t, c, mount))
	}
	t.Logf("creds worked %v after the approval (interval %v)", time.Since(approved).Round(100*time.Millisecond), interval)
	if in := introspect(t, str(s.Data["access_token"])); in["active"] != true || str(in["sub"]) != flowUser || str(in["client_id"]) != clientID {
		t.Errorf("the device flow's token is not active for %s and the client: %v", flowUser, in)
	}
	st := flowStatus(t, c, mount)
	if str(st["authorization"]) != "authorized" || str(st["sub"]) != flowUser || str(st["authorized_at"]) == "" {
		t.Errorf("status after the approval: authorization %q, sub %q, authorized_at %q", st["authorization"], st["sub"], st["authorized_at"])
	}
	checkRotation(t, c, mount, clientID)
}

// testDeviceFlowDenied: the user aborts on the provider's page; status says denied, creds stay
// refused.
func testDeviceFlowDenied(t *testing.T) {
	c := env.client
	mount, _ := userFlowRole(t, "device_code", "read", "", nil)
	userCode, verificationURI, interval := deviceStart(t, c, mount)
	newBrowser(t, env.vaultAddr).approveDevice(verificationURI, userCode, true)
	st := waitStatus(t, c, mount, interval+15*time.Second, "denied", func(st map[string]any) bool {
		return str(st["authorization"]) == "denied"
	})
	if lp := str(st["last_poll"]); lp != "access_denied" {
		t.Errorf("last_poll %q after the denial, want access_denied", lp)
	}
	credsRefused(t, c, mount, "device")
}

// testDeviceFlowSurvivesRestart: Vault (raft) restarts while a device authorization is pending;
// the restarted Vault resumes polling from storage, and the approval after the restart connects
// the role.
func testDeviceFlowSurvivesRestart(t *testing.T) {
	v := startRaftVault(t)
	c := v.client
	const mount = "oauth"
	mustWrite(t, c, mount+"/config", map[string]any{"issuer": env.ProviderURL})
	clientID := userFlowClient(t, c, mount, "device_code", "openid read", "", nil)
	userCode, verificationURI, interval := deviceStart(t, c, mount)
	waitStatus(t, c, mount, interval+15*time.Second, "the plugin's first poll", func(st map[string]any) bool {
		return str(st["last_poll"]) == "authorization_pending"
	})

	v.restart(t)
	polls := env.ProviderStats(t).ByClient[clientID]
	if !everySecond(time.Now().Add(interval+30*time.Second), func() bool { return env.ProviderStats(t).ByClient[clientID] > polls }) {
		t.Fatalf("no poll of the token endpoint within %v of the restart; status %v", interval+30*time.Second, flowStatus(t, c, mount))
	}
	if st := flowStatus(t, c, mount); str(st["authorization"]) != "pending" {
		t.Errorf("status after the restart: authorization %q, want pending", st["authorization"])
	}

	newBrowser(t, env.vaultAddr).approveDevice(verificationURI, userCode, false)
	approved := time.Now()
	// The status, not creds: the restarted Vault must connect the role by its own polling.
	st := waitStatus(t, c, mount, interval+15*time.Second, "authorized after the restart", func(st map[string]any) bool {
		return str(st["authorization"]) == "authorized"
	})
	t.Logf("after the restart, the role was connected %v after the approval (interval %v)", time.Since(approved).Round(100*time.Millisecond), interval)
	if str(st["sub"]) != flowUser {
		t.Errorf("status sub %q, want %s", st["sub"], flowUser)
	}
	credsAfter(t, c, mount, clientID)
}
