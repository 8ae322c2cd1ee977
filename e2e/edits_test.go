//go:build e2e

package e2e

// Regression tests for edits made while a role is in use: re-applying a role, deleting or
// changing it while its grant is in flight, rotating a refresh-token role, switching the config's
// client, and how often forced reads (min_seconds) may call the provider. All run in the real
// Vault against the real provider, through internal/faultproxy where a request must be held or
// failed, each on a mount (and proxy) of its own.
//
// Against the plugin built from main at f5d487f (before the fixes) all of these failed except
// TestEditsRoleDeletedDuringGrant/released_to_none and TestEditsRotate/client_credentials:
//
//   - ReapplyKeepsRefreshChain: the re-write with the spent R0 dropped the rotated chain; the read
//     sent R0 and got invalid_grant ("refresh token already used"), which also revokes the chain.
//   - RoleDeletedDuringGrant/released_to_html_503: the failed grant stored its bookkeeping (a copy
//     of the token cached before the delete) under the deleted role, answered 200 with that token,
//     and the role re-created under the same name served it.
//   - ScopesNarrowedDuringFailingGrant: the failed grant wrote the old-scope token back over the
//     role edit; the narrowed role served it (scope still with write).
//   - RefreshTokenImportedDuringFailingGrant: likewise the old chain's token (and refresh token)
//     came back over the import; the imported refresh token was never used.
//   - Rotate/refresh_token: rotate revoked the previous access token as the role's client, which
//     revoked the whole grant, new access token included (previous_token_revoked=true, no warning,
//     new token inactive).
//   - ConfigClientSwitch: the token of the old client kept being served after the config switch.
//   - ForcedReadsAreBounded: every forced read made a grant (20 of 20).

import (
	"context"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/oauth-broker/vault-plugin-secrets-oauth/internal/faultproxy"
)

const (
	// editsTokenTTL is the access-token lifetime (s) of the clients these tests register.
	editsTokenTTL = 1800
	// forcedGrantWindow: a read forces at most one new grant per role per this much time.
	forcedGrantWindow = 5 * time.Second
)

// forcedRead as min_seconds asks for more than any token of editsTokenTTL has.
var forcedRead = url.Values{"min_seconds": {"100000"}}

// editsClient is a root client that does not retry 5xx answers: one read, one grant.
func editsClient(t *testing.T) *api.Client {
	t.Helper()
	c, err := env.client.Clone()
	must(t, err)
	c.SetToken(env.client.Token())
	c.SetMaxRetries(0)
	return c
}

// discoveryMount mounts the plugin and configures it with the issuer (discovery, so rotate
// knows the revocation endpoint); config adds fields such as a default client.
func discoveryMount(t *testing.T, c *api.Client, prefix string, config map[string]any) string {
	t.Helper()
	mount := newMount(t, prefix)
	data := map[string]any{"issuer": env.ProviderURL}
	for k, v := range config {
		data[k] = v
	}
	mustWrite(t, c, mount+"/config", data)
	return mount
}

// proxiedMount is a mount whose token endpoint is the real provider's behind a fault proxy of
// its own (TLS), with a client registered for it as the config's default client.
type proxiedMount struct {
	path                   string
	clientID, clientSecret string
	proxy                  *faultproxy.Proxy
	c                      *api.Client
}

func newProxiedMount(t *testing.T, prefix string, timeout int, metadata map[string]any) *proxiedMount {
	t.Helper()
	proxy, tokenURL := startTokenProxy(t)
	md := map[string]any{"access_token_ttl": editsTokenTTL}
	for k, v := range metadata {
		md[k] = v
	}
	m := &proxiedMount{path: newMount(t, prefix), proxy: proxy, c: editsClient(t)}
	m.clientID, m.clientSecret = registerClient(t, md)
	mustWrite(t, m.c, m.path+"/config", map[string]any{
		"token_url": proxy.URL() + tokenURL.Path, "ca_pem": proxy.CAPEM(), "timeout": timeout,
		"client_id": m.clientID, "client_secret": m.clientSecret,
	})
	return m
}

func (m *proxiedMount) setScenario(t *testing.T, s faultproxy.Scenario) {
	t.Helper()
	if err := m.proxy.SetScenario(s); err != nil {
		t.Fatal(err)
	}
}

// waitFor polls cond until it holds, failing the test after timeout.
func waitFor(t *testing.T, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting until %s", timeout, what)
		}
		<-tick.C
	}
}

// waitTokenOlderThanWindow polls the role's status until its token was obtained more than
// forcedGrantWindow ago, so that a forced read may call the provider again. last_refresh has
// whole seconds (rounded down), hence the extra second.
func waitTokenOlderThanWindow(t *testing.T, c *api.Client, mount, role string) {
	t.Helper()
	status := mount + "/roles/" + role + "/status"
	var last time.Time
	waitFor(t, "the cached token is older than "+forcedGrantWindow.String(), 30*time.Second, func() bool {
		last = readStatus(t, c, status).LastRefresh
		return !last.IsZero() && time.Since(last) > forcedGrantWindow+time.Second+500*time.Millisecond
	})
	t.Logf("token obtained at %s, %s ago", last.Format(time.RFC3339), time.Since(last).Round(time.Millisecond))
}

// asyncRead is a read started in the background; wait parses its answer on the test goroutine.
type asyncRead struct {
	path string
	done chan struct{}
	resp *api.Response
	err  error
}

func startRead(c *api.Client, path string, params url.Values) *asyncRead {
	r := &asyncRead{path: path, done: make(chan struct{})}
	go func() {
		defer close(r.done)
		r.resp, r.err = c.Logical().ReadRawWithDataWithContext(context.Background(), path, params)
	}()
	return r
}

func (r *asyncRead) finished() bool {
	select {
	case <-r.done:
		return true
	default:
		return false
	}
}

func (r *asyncRead) wait(t *testing.T) (*api.Secret, int, string) {
	t.Helper()
	select {
	case <-r.done:
	case <-time.After(60 * time.Second):
		t.Fatalf("the read of %s did not end within 60s", r.path)
	}
	return parseResponse(t, "read "+r.path, r.resp, r.err)
}

func token(s *api.Secret) string {
	if s == nil {
		return ""
	}
	return str(s.Data["access_token"])
}

func scopeSet(scope string) []string { return strings.Fields(scope) }

// 1. Re-applying a refresh_token role with the refresh token it was created with (spent by now:
// the provider rotated it at the first grant) and one changed grant field keeps the rotated
// chain: the next read re-grants with the newest refresh token, not the spent one.
func TestEditsReapplyKeepsRefreshChain(t *testing.T) {
	t.Parallel()
	c := editsClient(t)
	mount := discoveryMount(t, c, "edits-reapply", nil)
	id, secret := registerClient(t, map[string]any{"grant_types": []string{"password", "refresh_token"}, "access_token_ttl": editsTokenTTL})
	r0 := obtainRefreshToken(t, id, secret)
	role := map[string]any{"grant_type": "refresh_token", "client_id": id, "client_secret": secret, "refresh_token": r0}
	mustWrite(t, c, mount+"/roles/mail", role)

	first, _ := readActiveToken(t, c, mount+"/creds/mail", id)
	if in := introspect(t, r0); in["active"] == true {
		t.Fatal("set-up: the provider did not rotate the imported refresh token at the first grant")
	}

	// As `vault write` of the whole role again would: every field, R0 included, and scopes added.
	role["scopes"] = "read"
	mustWrite(t, c, mount+"/roles/mail", role)

	s, code, msg := vaultRead(t, c, mount+"/creds/mail", nil)
	if code != http.StatusOK || s == nil {
		t.Fatalf("after re-applying the role with its original refresh token the read fails: HTTP %d: %s", code, msg)
	}
	got := token(s)
	if got == token(first) {
		t.Fatal("a changed grant field (scopes) did not re-grant: the token from before the edit is served")
	}
	in := introspect(t, got)
	if in["active"] != true || str(in["client_id"]) != id {
		t.Fatalf("the token after the re-apply is not active at the provider for the client: %v", in)
	}
	if sc := str(in["scope"]); sc != "read" {
		t.Errorf("the token after the re-apply has scope %q, want the role's new scopes (read)", sc)
	}
}

// 2a. A role deleted while its grant is held at the proxy stays deleted: the grant's outcome,
// success or failure, neither answers with a token for it nor leaves anything behind that a role
// re-created under the same name would serve.
func TestEditsRoleDeletedDuringGrant(t *testing.T) {
	t.Parallel()
	for _, release := range []faultproxy.Scenario{faultproxy.None, faultproxy.HTML503} {
		t.Run("released_to_"+string(release), func(t *testing.T) {
			t.Parallel()
			m := newProxiedMount(t, "edits-delete", 10, nil)
			c, roles, creds := m.c, m.path+"/roles/app", m.path+"/creds/app"
			roleData := map[string]any{"scopes": "read"}
			mustWrite(t, c, roles, roleData)
			before := token(mustRead(t, c, creds))
			waitTokenOlderThanWindow(t, c, m.path, "app")

			m.setScenario(t, faultproxy.Hold)
			t.Cleanup(func() { _ = m.proxy.SetScenario(faultproxy.None) })
			inflight := startRead(c, creds, forcedRead)
			waitFor(t, "the proxy holds the grant", 10*time.Second, func() bool { return m.proxy.Stats().Held == 1 })

			if code, msg := vaultDelete(t, c, roles); code/100 != 2 {
				t.Fatalf("deleting the role during its grant: HTTP %d: %s", code, msg)
			}
			stillHeld := m.proxy.Stats().Held == 1
			m.setScenario(t, release)
			s, code, msg := inflight.wait(t)
			t.Logf("in-flight read: HTTP %d, error %q (grant still held when the delete returned: %v)", code, msg, stillHeld)
			switch {
			case code == http.StatusOK:
				t.Errorf("the read of a role deleted during its grant answered with a token (the one cached before the delete: %v)", token(s) == before)
			case release == faultproxy.None && (code != http.StatusBadRequest || !strings.Contains(msg, "changed or deleted")):
				t.Errorf("the read whose grant succeeded after the role was deleted: HTTP %d %q, want 400 saying the role was changed or deleted", code, msg)
			}

			// Nothing resurrected.
			if s, code, _ := vaultRead(t, c, roles, nil); s != nil || code != http.StatusNotFound {
				t.Errorf("read of the deleted role: HTTP %d, %v; want 404", code, s)
			}
			if names := vaultList(t, c, m.path+"/roles"); slices.Contains(names, "app") {
				t.Errorf("the deleted role is listed again: %v", names)
			}

			// Re-created under the same name, with the provider healthy, the role obtains a token
			// of its own.
			m.setScenario(t, faultproxy.None)
			forwarded := m.proxy.Stats().Forwarded
			mustWrite(t, c, roles, roleData)
			s, code, msg = vaultRead(t, c, creds, nil)
			if code != http.StatusOK || s == nil {
				t.Fatalf("reading the re-created role: HTTP %d: %s", code, msg)
			}
			if token(s) == before {
				t.Fatal("the re-created role serves the token cached before the delete")
			}
			if n := m.proxy.Stats().Forwarded - forwarded; n != 1 {
				t.Errorf("the re-created role's first read made %d grants, want 1 (a token from before, or from the in-flight grant, was served)", n)
			}
			if in := introspect(t, token(s)); in["active"] != true || str(in["client_id"]) != m.clientID {
				t.Errorf("the re-created role's token is not active for the client: %v", in)
			}
		})
	}
}

// 2b. Narrowing a role's scopes while a grant with the old scopes is in flight and then fails
// must not bring back the token with the old scopes.
func TestEditsScopesNarrowedDuringFailingGrant(t *testing.T) {
	t.Parallel()
	m := newProxiedMount(t, "edits-narrow", faultTimeout, nil)
	c, roles, creds := m.c, m.path+"/roles/app", m.path+"/creds/app"
	mustWrite(t, c, roles, map[string]any{"scopes": "read,write"})
	s1 := mustRead(t, c, creds)
	t1 := token(s1)
	if sc := scopeSet(str(s1.Data["scope"])); !slices.Contains(sc, "read") || !slices.Contains(sc, "write") {
		t.Fatalf("set-up: the first token has scope %q, want read and write", s1.Data["scope"])
	}
	waitTokenOlderThanWindow(t, c, m.path, "app")

	s := m.editDuringHungGrant(t, roles, creds, map[string]any{"scopes": "read"})
	if token(s) == t1 {
		t.Fatal("the narrowed role serves the token obtained with the old scopes")
	}
	if sc := scopeSet(str(s.Data["scope"])); slices.Contains(sc, "write") {
		t.Errorf("the narrowed role's token has scope %q, which still holds the removed write", s.Data["scope"])
	}
	in := introspect(t, token(s))
	if in["active"] != true || slices.Contains(scopeSet(str(in["scope"])), "write") {
		t.Errorf("the narrowed role's token at the provider: %v; want active without write", in)
	}
}

// 2c. Importing a new refresh token while a grant with the old chain is in flight and then
// fails: the next read uses the imported refresh token, not the old chain's cached token.
func TestEditsRefreshTokenImportedDuringFailingGrant(t *testing.T) {
	t.Parallel()
	m := newProxiedMount(t, "edits-import", faultTimeout, map[string]any{"grant_types": []string{"password", "refresh_token"}})
	c, roles, creds := m.c, m.path+"/roles/mail", m.path+"/creds/mail"
	r0 := obtainRefreshToken(t, m.clientID, m.clientSecret)
	mustWrite(t, c, roles, map[string]any{"grant_type": "refresh_token", "refresh_token": r0})
	t1 := token(mustRead(t, c, creds))
	rNew := obtainRefreshToken(t, m.clientID, m.clientSecret) // a grant of its own at the provider
	waitTokenOlderThanWindow(t, c, m.path, "mail")

	s := m.editDuringHungGrant(t, roles, creds, map[string]any{"refresh_token": rNew})
	if token(s) == t1 {
		t.Fatal("after importing a new refresh token the role serves the old chain's token")
	}
	if in := introspect(t, token(s)); in["active"] != true || str(in["client_id"]) != m.clientID {
		t.Errorf("the token after the import is not active for the client: %v", in)
	}
	if in := introspect(t, rNew); in["active"] == true {
		t.Error("the imported refresh token is still unused: the token does not come from its grant")
	}
}

// 3. rotate keeps a refresh_token role alive: by default it does not revoke the previous access
// token (which would revoke the role's grant at providers like this one) and says so; with
// revoke_previous=true it does. A client_credentials role's previous token is revoked by default.
func TestEditsRotate(t *testing.T) {
	t.Parallel()
	t.Run("refresh_token", func(t *testing.T) {
		t.Parallel()
		c := editsClient(t)
		mount := discoveryMount(t, c, "edits-rotate-rt", nil)
		if env.Discovery.RevocationEndpoint == "" {
			t.Fatal("the provider announces no revocation endpoint")
		}
		id, secret := registerClient(t, map[string]any{"grant_types": []string{"password", "refresh_token"}, "access_token_ttl": editsTokenTTL})
		rt := obtainRefreshToken(t, id, secret)
		mustWrite(t, c, mount+"/roles/mail", map[string]any{
			"grant_type": "refresh_token", "client_id": id, "client_secret": secret, "refresh_token": rt,
		})
		creds := mount + "/creds/mail"
		t1 := token(mustRead(t, c, creds))

		rot := mustWrite(t, c, mount+"/rotate/mail", map[string]any{})
		if rot == nil {
			t.Fatal("rotate answered without data")
		}
		if rot.Data["previous_token_revoked"] != false {
			t.Errorf("rotate of a refresh_token role: previous_token_revoked = %v, want false", rot.Data["previous_token_revoked"])
		}
		explained := false
		for _, w := range rot.Warnings {
			explained = explained || strings.Contains(strings.ToLower(w), "refresh")
		}
		if !explained {
			t.Errorf("rotate of a refresh_token role does not explain in a warning why the previous token was not revoked: %q", rot.Warnings)
		}
		t2 := token(mustRead(t, c, creds))
		if t2 == t1 {
			t.Fatal("rotate did not replace the token")
		}
		if in := introspect(t, t2); in["active"] != true {
			t.Fatalf("the token rotate obtained is not active at the provider: %v", in)
		}

		waitTokenOlderThanWindow(t, c, mount, "mail")
		s, code, msg := vaultRead(t, c, creds, forcedRead)
		if code != http.StatusOK || s == nil {
			t.Fatalf("a forced read after rotate fails: HTTP %d: %s", code, msg)
		}
		t3 := token(s)
		if t3 == t2 {
			t.Fatalf("a forced read after rotate obtained no new token (warnings %q)", s.Warnings)
		}
		if in := introspect(t, t3); in["active"] != true {
			t.Fatalf("the token of the forced read after rotate is not active: %v", in)
		}

		rot = mustWrite(t, c, mount+"/rotate/mail", map[string]any{"revoke_previous": true})
		if rot == nil || rot.Data["previous_token_revoked"] != true {
			t.Errorf("rotate with revoke_previous=true: previous_token_revoked = %v, want true", rot)
		}
		if in := introspect(t, t3); in["active"] == true {
			t.Error("rotate with revoke_previous=true left the previous access token active")
		}
	})
	t.Run("client_credentials", func(t *testing.T) {
		t.Parallel()
		c := editsClient(t)
		mount := discoveryMount(t, c, "edits-rotate-cc", nil)
		id, secret := registerClient(t, map[string]any{"access_token_ttl": editsTokenTTL})
		mustWrite(t, c, mount+"/roles/app", map[string]any{"client_id": id, "client_secret": secret, "scopes": "read"})
		t1 := token(mustRead(t, c, mount+"/creds/app"))

		rot := mustWrite(t, c, mount+"/rotate/app", map[string]any{})
		if rot == nil || rot.Data["previous_token_revoked"] != true {
			t.Errorf("rotate of a client_credentials role: previous_token_revoked = %v, want true", rot)
		}
		if in := introspect(t, t1); in["active"] == true {
			t.Error("rotate of a client_credentials role left the previous access token active")
		}
		t2 := token(mustRead(t, c, mount+"/creds/app"))
		if t2 == t1 {
			t.Fatal("rotate did not replace the token")
		}
		if in := introspect(t, t2); in["active"] != true || str(in["client_id"]) != id {
			t.Errorf("the token rotate obtained is not active for the client: %v", in)
		}
	})
}

// 5. A role that inherits the config's client gets tokens for the new client once the config's
// client is switched, without min_seconds.
func TestEditsConfigClientSwitch(t *testing.T) {
	t.Parallel()
	c := editsClient(t)
	idA, secretA := registerClient(t, map[string]any{"access_token_ttl": editsTokenTTL})
	idB, secretB := registerClient(t, map[string]any{"access_token_ttl": editsTokenTTL})
	mount := discoveryMount(t, c, "edits-client", map[string]any{"client_id": idA, "client_secret": secretA})
	mustWrite(t, c, mount+"/roles/app", map[string]any{"scopes": "read"})
	readActiveToken(t, c, mount+"/creds/app", idA)

	mustWrite(t, c, mount+"/config", map[string]any{"client_id": idB, "client_secret": secretB})
	s := mustRead(t, c, mount+"/creds/app")
	in := introspect(t, token(s))
	if got := str(in["client_id"]); in["active"] != true || got != idB {
		who := map[string]string{idA: "client A, from before the switch", idB: "client B"}[got]
		t.Fatalf("after switching the config's client to B the role's token is for %q (%s), active %v; want an active token for B", got, who, in["active"])
	}
}

// 7. Forced reads are bounded: a burst of reads with min_seconds above the token's lifetime makes
// at most one grant per role per forcedGrantWindow (reads that make none get the cached token and
// a warning), and once the token is older than that a forced read does get a fresh one.
func TestEditsForcedReadsAreBounded(t *testing.T) {
	t.Parallel()
	c := editsClient(t)
	id, secret := registerClient(t, map[string]any{"access_token_ttl": editsTokenTTL})
	mount := discoveryMount(t, c, "edits-forced", map[string]any{"client_id": id, "client_secret": secret})
	mustWrite(t, c, mount+"/roles/app", map[string]any{"scopes": "read"})
	creds := mount + "/creds/app"
	grants := func() int { return env.ProviderStats(t).ByClient[id] }

	prev := token(mustRead(t, c, creds))
	before := grants()
	start := time.Now()
	changed := 0
	for i := range 20 {
		s := readWith(t, c, creds, forcedRead)
		if tok := token(s); tok != prev {
			changed++
			prev = tok
		} else if len(s.Warnings) == 0 {
			t.Errorf("forced read %d served the cached token without a warning", i+1)
		}
	}
	made := grants() - before
	t.Logf("20 forced reads in %s: %d grants at the provider, %d new tokens", time.Since(start).Round(time.Millisecond), made, changed)
	if made > 2 {
		t.Errorf("20 forced reads in a row made %d grants at the provider, want at most 2", made)
	}

	waitTokenOlderThanWindow(t, c, mount, "app")
	before = grants()
	s := readWith(t, c, creds, forcedRead)
	if token(s) == prev {
		t.Fatalf("a forced read of a token older than %s did not obtain a fresh one (warnings %q)", forcedGrantWindow, s.Warnings)
	}
	if n := grants() - before; n != 1 {
		t.Errorf("the forced read made %d grants at the provider, want 1", n)
	}
	if in := introspect(t, token(s)); in["active"] != true || str(in["client_id"]) != id {
		t.Errorf("the fresh token is not active for the client: %v", in)
	}
}

// readWith is mustReadWith for a given client.
func readWith(t *testing.T, c *api.Client, path string, params url.Values) *api.Secret {
	t.Helper()
	s, code, msg := vaultRead(t, c, path, params)
	if code != http.StatusOK || s == nil {
		t.Fatalf("read %s: HTTP %d: %s", path, code, msg)
	}
	return s
}

// editDuringHungGrant writes edit to the role while a forced grant hangs at the proxy until the
// mount's timeout fails it, then reads the role's creds with the provider healthy again.
func (m *proxiedMount) editDuringHungGrant(t *testing.T, roles, creds string, edit map[string]any) *api.Secret {
	t.Helper()
	m.setScenario(t, faultproxy.Hang)
	t.Cleanup(func() { _ = m.proxy.SetScenario(faultproxy.None) })
	requests := m.proxy.Stats().Requests
	inflight := startRead(m.c, creds, forcedRead)
	waitFor(t, "the forced grant reaches the proxy", 10*time.Second, func() bool { return m.proxy.Stats().Requests > requests })

	mustWrite(t, m.c, roles, edit)
	t.Logf("the grant was still in flight when the role write returned: %v", !inflight.finished())
	_, code, msg := inflight.wait(t)
	t.Logf("in-flight read: HTTP %d, error %q", code, msg)

	m.setScenario(t, faultproxy.None)
	s, code, msg := vaultRead(t, m.c, creds, nil)
	if code != http.StatusOK || s == nil {
		t.Fatalf("reading %s after the edit with the provider healthy: HTTP %d: %s", creds, code, msg)
	}
	return s
}
