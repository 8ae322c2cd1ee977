//go:build e2e

package e2e

import (
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/oauth-broker/vault-plugin-secrets-oauth/internal/e2eharness"
)

// shortTTL is the access-token lifetime (seconds) of the clients whose tokens the refresher must
// keep alive: above Vault's one-minute rollback tick, which calls the refresher, and short enough
// to see several refreshes within a few minutes.
const shortTTL = 150

// TestRefresh covers the background refresher (issue 4) in a real Vault against the real provider,
// and the issue 16 tests that, like it, wait for time to pass. Each test has a mount (or a Vault)
// of its own. They run in four parallel lanes, one per slot of -parallel 4 (scripts/e2e.sh),
// because the refresher only acts at Vault's one-minute ticks: about 4 minutes in all, the time of
// periodic and agent; the other two lanes run their tests one after the other in less. Exactly
// four: Go starts parallel subtests waiting for a slot in no fixed order, and with more lanes
// than slots a run can start periodic or agent only after another test, a minute or two late.
// With fewer slots (go test's default is one per CPU) lanes wait for each other.
func TestRefresh(t *testing.T) {
	t.Run("periodic", testPeriodicRefresh)
	t.Run("agent", testAgentStaysCurrent)
	t.Run("recovery", func(t *testing.T) { // about 3m20s
		t.Parallel()
		t.Run("rotate", testRotate)
		t.Run("restart", testRefreshSurvivesRestart)
		// The fault matrix's Retry-After recovery (faults_test.go): its wait overlaps the ticks
		// the other lanes wait for.
		t.Run("retry_after", testRetryAfterRecovery)
	})
	t.Run("issue16", func(t *testing.T) { // about 1m45s
		t.Parallel()
		// The metrics endpoint (metrics_test.go).
		t.Run("metrics", testMetrics)
		// Vault Agent and a lease=false role (leaseless_test.go): 90 s tokens, two replacements.
		t.Run("agent_leaseless", testAgentLeaseless)
	})
}

// roleStatus is a read of roles/<name>/status.
type roleStatus struct {
	ExpiresAt, LastRefresh, NextRefresh time.Time
	LastError                           string
	ConsecutiveFailures, Grants         int64
}

func readStatus(t testing.TB, c *api.Client, path string) roleStatus {
	t.Helper()
	d := mustRead(t, c, path).Data
	return roleStatus{
		ExpiresAt:           statusTime(t, d, "expires_at"),
		LastRefresh:         statusTime(t, d, "last_refresh"),
		NextRefresh:         statusTime(t, d, "next_refresh"),
		LastError:           str(d["last_error"]),
		ConsecutiveFailures: num(t, d["consecutive_failures"], "consecutive_failures"),
		Grants:              num(t, d["grants"], "grants"),
	}
}

// statusTime parses an RFC 3339 status field; "" is the zero time.
func statusTime(t testing.TB, d map[string]any, key string) time.Time {
	t.Helper()
	s := str(d[key])
	if s == "" {
		return time.Time{}
	}
	at, err := time.Parse(time.RFC3339, s)
	if err != nil {
		t.Fatalf("status %s = %q: %v", key, s, err)
	}
	return at
}

// shortLivedMount mounts the plugin with a provider client whose tokens live shortTTL seconds as
// the config's default client, and a client_credentials role "app".
func shortLivedMount(t *testing.T, prefix string) (mount, clientID string) {
	t.Helper()
	mount = newMount(t, prefix)
	clientID, secret := registerClient(t, map[string]any{"access_token_ttl": shortTTL})
	mustWrite(t, env.client, mount+"/config", map[string]any{
		"issuer": env.ProviderURL, "client_id": clientID, "client_secret": secret,
	})
	mustWrite(t, env.client, mount+"/roles/app", map[string]any{"scopes": "read"})
	return mount, clientID
}

// everySecond calls poll once a second until it returns true or the deadline passes; it
// reports whether poll returned true.
func everySecond(deadline time.Time, poll func() bool) bool {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for time.Now().Before(deadline) {
		if poll() {
			return true
		}
		<-tick.C
	}
	return false
}

// grantsAtProvider is the provider's count of token requests by clientID, read on both sides of
// the role's status so that a grant landing in between cannot make the two disagree.
func grantsAtProvider(t *testing.T, c *api.Client, clientID, statusPath string) (provider, status int64) {
	t.Helper()
	for {
		before := env.ProviderStats(t).ByClient[clientID]
		st := readStatus(t, c, statusPath)
		if after := env.ProviderStats(t).ByClient[clientID]; after == before {
			return int64(before), st.Grants
		}
	}
}

// testPeriodicRefresh: with no read after the first, the refresher replaces a short-lived token
// at Vault's ticks, each time before the token it replaces has expired.
func testPeriodicRefresh(t *testing.T) {
	t.Parallel()
	c := env.client
	mount, clientID := shortLivedMount(t, "refresh-periodic")
	statusPath := mount + "/roles/app/status"

	first := str(mustRead(t, c, mount+"/creds/app").Data["access_token"])
	start := readStatus(t, c, statusPath)
	if start.Grants != 1 || start.NextRefresh.IsZero() {
		t.Fatalf("after the first read: grants %d, next_refresh %v; want 1 and set", start.Grants, start.NextRefresh)
	}

	// Two periodic refreshes prove the refresher keeps going; a third, when it comes in time,
	// gives a better measure of the refresh rate.
	const want = 3
	prev := start
	var refreshTimes []time.Time
	var margins []string
	everySecond(time.Now().Add(4*time.Minute), func() bool {
		st := readStatus(t, c, statusPath)
		if st.ConsecutiveFailures != 0 || st.LastError != "" {
			t.Fatalf("the refresher failed: %d consecutive failures, last error %q", st.ConsecutiveFailures, st.LastError)
		}
		if st.NextRefresh.IsZero() {
			t.Errorf("next_refresh is empty for a %ds token", shortTTL)
		}
		if st.Grants == prev.Grants {
			return false
		}
		if !st.LastRefresh.After(prev.LastRefresh) {
			t.Errorf("grants %d → %d but last_refresh stayed %v", prev.Grants, st.Grants, st.LastRefresh)
		}
		// The replaced token's life left when its successor was obtained.
		left := prev.ExpiresAt.Sub(st.LastRefresh)
		if left <= 0 {
			t.Errorf("the token expiring at %v was replaced only at %v", prev.ExpiresAt, st.LastRefresh)
		}
		if len(refreshTimes) == 0 {
			// Straight after its replacement the first token must still be alive (the refresher
			// does not revoke what it replaces).
			if in := introspect(t, first); in["active"] != true {
				t.Errorf("the first token is inactive right after its replacement: %v", in)
			}
		}
		margins = append(margins, fmt.Sprintf("%v", left))
		refreshTimes = append(refreshTimes, st.LastRefresh)
		prev = st
		return len(refreshTimes) == want
	})
	if len(refreshTimes) < 2 {
		t.Fatalf("%d periodic refreshes in 4 minutes, want at least 2 (status: %+v)", len(refreshTimes), prev)
	}

	provider, grants := grantsAtProvider(t, c, clientID, statusPath)
	if provider != grants {
		t.Errorf("the provider saw %d token requests from the client, the role's status counts %d grants", provider, grants)
	}
	mean := refreshTimes[len(refreshTimes)-1].Sub(start.LastRefresh) / time.Duration(len(refreshTimes))
	t.Logf("%d periodic refreshes without reads, every %v on average: %.1f grants per %ds token lifetime; the replaced tokens had %s left; provider saw %d grants",
		len(refreshTimes), mean.Round(time.Second), float64(shortTTL*time.Second)/float64(mean), shortTTL, strings.Join(margins, ", "), provider)
}

// testAgentStaysCurrent: Vault Agent keeps a rendered file current across refreshes, and the
// file never holds a token the provider no longer accepts.
func testAgentStaysCurrent(t *testing.T) {
	t.Parallel()
	mount, clientID := shortLivedMount(t, "refresh-agent")
	rendered, stop := runAgent(t, fmt.Sprintf(`{{ with secret "%s/creds/app" }}{{ .Data.access_token }}{{ end }}`, mount))
	defer stop()

	const wantChanges = 2
	var current string
	changes := 0
	minLeft := int64(shortTTL)
	var atChange []string // life left of the outgoing and the incoming token at each change
	lastLeft := int64(0)
	everySecond(time.Now().Add(330*time.Second), func() bool {
		b, err := os.ReadFile(rendered)
		if err != nil {
			t.Fatalf("reading the rendered file: %v", err)
		}
		content := string(b)
		if content == "" {
			t.Errorf("the rendered file is empty")
			return false
		}
		rememberSecret(kindAccessToken, content) // a creds answer the agent received
		in := introspect(t, content)
		left := num(t, in["exp"], "introspection exp") - time.Now().Unix()
		if in["active"] != true || str(in["client_id"]) != clientID {
			t.Fatalf("the rendered file holds a token that is not active for the client (after %d changes): %v", changes, in)
		}
		minLeft = min(minLeft, left)
		if content != current {
			if current != "" {
				changes++
				atChange = append(atChange, fmt.Sprintf("%ds→%ds", lastLeft, left))
			}
			current = content
		}
		lastLeft = left
		return changes == wantChanges
	})
	if changes < wantChanges {
		t.Fatalf("the rendered file changed %d times in 330s, want %d", changes, wantChanges)
	}
	t.Logf("the rendered file changed %d times (token life left, outgoing→incoming: %s); least life left seen in the file: %ds of %ds",
		changes, strings.Join(atChange, ", "), minLeft, shortTTL)
}

// testRotate: rotate/<name> replaces the cached token and revokes the old one at the provider.
func testRotate(t *testing.T) {
	c := env.client
	mount := newMount(t, "refresh-rotate")
	clientID, secret := registerClient(t, nil)
	mustWrite(t, c, mount+"/config", map[string]any{
		"issuer": env.ProviderURL, "client_id": clientID, "client_secret": secret,
	})
	mustWrite(t, c, mount+"/roles/app", map[string]any{"scopes": "read"})

	old, _ := readActiveToken(t, c, mount+"/creds/app", clientID)
	resp := mustWrite(t, c, mount+"/rotate/app", map[string]any{})
	if resp == nil || resp.Data["previous_token_revoked"] != true {
		t.Errorf("rotate did not report the old token revoked: %v", resp)
	}
	if len(resp.Warnings) > 0 {
		t.Errorf("rotate warned: %v", resp.Warnings)
	}
	if g := num(t, resp.Data["grants"], "grants"); g != 2 {
		t.Errorf("grants after rotate = %d, want 2", g)
	}

	next, _ := readActiveToken(t, c, mount+"/creds/app", clientID)
	oldToken, newToken := str(old.Data["access_token"]), str(next.Data["access_token"])
	if newToken == oldToken {
		t.Fatal("creds after rotate returned the old token")
	}
	if in := introspect(t, oldToken); in["active"] != false {
		t.Errorf("the rotated-out token is still active at the provider: %v", in)
	}
	if n := env.ProviderStats(t).ByClient[clientID]; n != 2 {
		t.Errorf("the provider saw %d token requests from the client, want 2 (read, rotate)", n)
	}
}

// raftVault is a Vault of this test's own on raft storage (scripts/vault.sh --raft), with the
// plugin mounted at oauth/, so that restarting it disturbs no other test.
type raftVault struct {
	dir    string
	client *api.Client
}

func startRaftVault(t *testing.T) *raftVault {
	t.Helper()
	v := &raftVault{dir: filepath.Join(env.StateDir, "raft-"+randSuffix())}
	t.Cleanup(func() {
		if _, err := env.RunScript("scripts/vault.sh", "stop", v.dir); err != nil {
			t.Errorf("stopping the raft Vault: %v", err)
		}
	})
	v.run(t, "start", "--raft")
	c, err := env.client.Clone()
	must(t, err)
	v.client = c
	v.connect(t)
	return v
}

// run calls scripts/vault.sh and lets the watchdog know the server's pid.
func (v *raftVault) run(t *testing.T, cmd string, flags ...string) {
	t.Helper()
	if _, err := env.RunScript("scripts/vault.sh", append([]string{cmd, v.dir}, flags...)...); err != nil {
		t.Fatalf("vault.sh %s: %v%s", cmd, err, e2eharness.FileTail(filepath.Join(v.dir, "vault.log"), 40))
	}
	b, err := os.ReadFile(filepath.Join(v.dir, "vault.pid"))
	must(t, err)
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	must(t, err)
	env.TrackPid(t, pid)
}

// connect points the client at the server's current address and root token.
func (v *raftVault) connect(t *testing.T) {
	t.Helper()
	vars, err := e2eharness.ReadEnvFile(filepath.Join(v.dir, "vault.env"), "VAULT_ADDR", "VAULT_TOKEN")
	must(t, err)
	must(t, v.client.SetAddress(vars["VAULT_ADDR"]))
	v.client.SetToken(vars["VAULT_TOKEN"])
}

func (v *raftVault) restart(t *testing.T) {
	t.Helper()
	v.run(t, "restart")
	v.connect(t)
}

// testRefreshSurvivesRestart: across a restart on persistent storage, roles, cached tokens and
// rotated refresh tokens survive, and the refresher resumes.
func testRefreshSurvivesRestart(t *testing.T) {
	v := startRaftVault(t)
	c := v.client
	const mount = "oauth"
	mustWrite(t, c, mount+"/config", map[string]any{"issuer": env.ProviderURL})

	role := func(name string, metadata, data map[string]any) string {
		id, secret := registerClient(t, metadata)
		data["client_id"], data["client_secret"] = id, secret
		mustWrite(t, c, mount+"/roles/"+name, data)
		return id
	}
	// cached: a long-lived token, which must be served from storage after the restart.
	cachedID := role("cached", nil, map[string]any{"scopes": "read"})
	// short: a token the refresher replaces at every tick, to see it resume.
	role("short", map[string]any{"access_token_ttl": shortTTL}, map[string]any{"scopes": "read"})
	// mail: an imported refresh token, rotated by the provider at each use.
	mailID, mailSecret := registerClient(t, map[string]any{"grant_types": []string{"password", "refresh_token"}})
	imported := obtainRefreshToken(t, mailID, mailSecret)
	mustWrite(t, c, mount+"/roles/mail", map[string]any{
		"grant_type": "refresh_token", "client_id": mailID, "client_secret": mailSecret, "refresh_token": imported,
	})

	names := []string{"cached", "mail", "short"}
	cached, _ := readActiveToken(t, c, mount+"/creds/cached", cachedID)
	mustRead(t, c, mount+"/creds/short")
	mail, _ := readActiveToken(t, c, mount+"/creds/mail", mailID)
	if in := introspect(t, imported); in["active"] == true {
		t.Fatal("the imported refresh token should be spent: the provider rotates it at each use")
	}
	rolesBefore := map[string]map[string]any{}
	for _, n := range names {
		rolesBefore[n] = mustRead(t, c, mount+"/roles/"+n).Data
	}
	stats := env.ProviderStats(t)

	v.restart(t)
	restarted := time.Now().Truncate(time.Second)

	if got := vaultList(t, c, mount+"/roles"); !reflect.DeepEqual(got, names) {
		t.Errorf("roles after the restart: %v, want %v", got, names)
	}
	for _, n := range names {
		if got := mustRead(t, c, mount+"/roles/"+n).Data; !reflect.DeepEqual(got, rolesBefore[n]) {
			t.Errorf("role %s changed across the restart:\n got %v\nwant %v", n, got, rolesBefore[n])
		}
		if st := readStatus(t, c, mount+"/roles/"+n+"/status"); st.NextRefresh.IsZero() || st.Grants == 0 || st.LastError != "" {
			t.Errorf("status of %s after the restart: %+v; want next_refresh set, grants kept, no error", n, st)
		}
	}

	if got := str(mustRead(t, c, mount+"/creds/cached").Data["access_token"]); got != str(cached.Data["access_token"]) {
		t.Error("the cached token was not kept across the restart")
	}
	if n := env.ProviderStats(t).ByClient[cachedID]; n != stats.ByClient[cachedID] {
		t.Errorf("the provider saw %d token requests for the cached role, %d before the restart", n, stats.ByClient[cachedID])
	}

	// A new grant now needs the refresh token the provider rotated before the restart.
	forced, code, msg := vaultRead(t, c, mount+"/creds/mail", url.Values{"min_seconds": {"86400"}})
	if code != http.StatusOK || forced == nil {
		t.Fatalf("a new grant with the refresh token stored before the restart failed: HTTP %d: %s", code, msg)
	}
	if str(forced.Data["access_token"]) == str(mail.Data["access_token"]) {
		t.Error("min_seconds above the lifetime should obtain a new token")
	}
	if in := introspect(t, str(forced.Data["access_token"])); in["active"] != true {
		t.Errorf("the token from the rotated refresh token is not active: %v", in)
	}
	if n := env.ProviderStats(t).ByClient[mailID]; n != stats.ByClient[mailID]+1 {
		t.Errorf("the provider saw %d token requests for the mail role, want one more than the %d before", n, stats.ByClient[mailID])
	}

	// The refresher resumes: the short-lived token is replaced at one of the next ticks.
	var short roleStatus
	resumed := everySecond(time.Now().Add(150*time.Second), func() bool {
		short = readStatus(t, c, mount+"/roles/short/status")
		return !short.LastRefresh.Before(restarted)
	})
	if !resumed {
		t.Fatalf("no refresh of the short-lived role within 150s of the restart at %v: status %+v", restarted, short)
	}
	t.Logf("the refresher replaced the short-lived token %v after the restart (grants %d)", short.LastRefresh.Sub(restarted), short.Grants)
}
