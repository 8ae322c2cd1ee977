//go:build e2e

package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/oauth-broker/vault-plugin-secrets-oauth/internal/e2eharness"
)

// Reads without a lease (issue 16): a lease=false role's creds answer carries no lease but ttl
// (seconds until the token falls to its refresh threshold) and rotation_period, and Vault Agent
// (consul-template v0.41.1, dependency/vault_common.go leaseCheckWait) reads such a secret again
// ttl + 1 s later: right after the token fell below its threshold, so that the read replaces it.
const (
	// leaselessTTL is the access-token lifetime (s) of the test's client: short, so that two
	// replacements fit in two minutes.
	leaselessTTL = 90
	// leaselessThreshold is its refresh threshold: refresh_fraction 0.5 (the default) × 90 s.
	leaselessThreshold = leaselessTTL / 2
	// renderSlack is how much less than the threshold a token may have left when the test first
	// sees it rendered: the file is checked once a second, and introspection's exp is whole
	// seconds.
	renderSlack = 3
)

// leaselessRead reads creds of a lease=false role and checks the answer: no lease, ttl and
// rotation_period as JSON numbers (consul-template type-asserts json.Number and otherwise falls
// back to its 5-minute default), rotation_period = lifetime − threshold, ttl = expires_in −
// threshold. It returns the token and its expires_in.
func leaselessRead(t *testing.T, c *api.Client, creds string) (token string, expiresIn int64) {
	t.Helper()
	s := mustRead(t, c, creds)
	if s.LeaseID != "" || s.LeaseDuration != 0 || s.Renewable {
		t.Fatalf("a lease=false read answered a lease: id %q, duration %d, renewable %v", s.LeaseID, s.LeaseDuration, s.Renewable)
	}
	ttl, ok := s.Data["ttl"].(json.Number)
	period, ok2 := s.Data["rotation_period"].(json.Number)
	if !ok || !ok2 {
		t.Fatalf("ttl %v (%T) and rotation_period %v (%T) must be JSON numbers", s.Data["ttl"], s.Data["ttl"], s.Data["rotation_period"], s.Data["rotation_period"])
	}
	expiresIn = num(t, s.Data["expires_in"], "expires_in")
	if p := num(t, period, "rotation_period"); p != leaselessTTL-leaselessThreshold {
		t.Errorf("rotation_period = %d, want %d (lifetime − threshold)", p, leaselessTTL-leaselessThreshold)
	}
	// A token served to a read has more than its threshold left (the provider is healthy).
	if got, want := num(t, ttl, "ttl"), expiresIn-leaselessThreshold; got < 0 || abs(got-want) > 1 {
		t.Errorf("ttl = %d with expires_in %d; want expires_in − %d = %d", got, expiresIn, leaselessThreshold, want)
	}
	return str(s.Data["access_token"]), expiresIn
}

// leaseLookup lists the leases Vault holds under <mount>/creds/<role>/.
func leaseLookup(t *testing.T, mount, role string) []string {
	t.Helper()
	return vaultList(t, env.client, "sys/leases/lookup/"+mount+"/creds/"+role+"/")
}

// renderSeen is one token as the Agent rendered it, when the test first saw it in the file.
type renderSeen struct {
	at       time.Time
	left     int64 // its life left then (introspection exp − now)
	outgoing int64 // the replaced token's life left then (0 for the first render)
}

// testAgentLeaseless: Vault Agent renders a lease=false role across two token replacements;
// every second the file holds a token active at the provider, no lease ever exists for the
// role, and each token rendered had at least its refresh threshold left (the Agent came back
// right after the old token fell below the threshold). The mount's metrics then agree with the
// provider and the Agent's log, and show the refresher's ticks.
func testAgentLeaseless(t *testing.T) {
	c := env.client
	mount := newMount(t, "refresh-leaseless")
	clientID, secret := registerClient(t, map[string]any{"access_token_ttl": leaselessTTL})
	controlID, controlSecret := registerClient(t, map[string]any{"access_token_ttl": leaselessTTL})
	mustWrite(t, c, mount+"/config", map[string]any{
		"issuer": env.ProviderURL, "client_id": clientID, "client_secret": secret, "lease": false,
	})
	// app inherits lease=false from the config. leased sets lease=true itself (with a client of
	// its own, not to count in app's grants): the control showing that the lookup lists a lease
	// where there is one.
	mustWrite(t, c, mount+"/roles/app", map[string]any{"scopes": "read"})
	mustWrite(t, c, mount+"/roles/leased", map[string]any{"scopes": "read", "lease": true, "client_id": controlID, "client_secret": controlSecret})
	if s := mustRead(t, c, mount+"/creds/leased"); s.LeaseID == "" {
		t.Fatalf("the lease=true control read has no lease: %v", s.Data)
	}
	if keys := leaseLookup(t, mount, "leased"); len(keys) != 1 {
		t.Fatalf("the lease lookup lists %d leases for the lease=true control after one read, want 1: the lookup sees nothing", len(keys))
	}

	// Many direct reads: one grant, the same token, never a lease.
	const directReads = 100
	creds := mount + "/creds/app"
	first, _ := leaselessRead(t, c, creds)
	for i := 1; i < directReads; i++ {
		if tok, _ := leaselessRead(t, c, creds); tok != first {
			t.Fatalf("direct read %d returned another token", i+1)
		}
	}
	if keys := leaseLookup(t, mount, "app"); len(keys) != 0 {
		t.Fatalf("%d direct lease=false reads left %d leases: %v", directReads, len(keys), keys)
	}

	grants0 := env.ProviderStats(t).ByClient[clientID]
	start := time.Now()
	rendered, stop := runAgent(t, fmt.Sprintf(`{{ with secret "%s" }}{{ .Data.access_token }}{{ end }}`, creds))
	defer stop()

	const wantChanges = 2
	var renders []renderSeen
	var current string
	var currentExp int64
	lookups := 0
	everySecond(time.Now().Add(150*time.Second), func() bool {
		b, err := os.ReadFile(rendered)
		if err != nil {
			t.Fatalf("reading the rendered file: %v", err)
		}
		content := string(b)
		if content == "" {
			t.Fatal("the rendered file is empty")
		}
		rememberSecret(kindAccessToken, content) // a creds answer the Agent received
		in := introspect(t, content)
		now := time.Now()
		if in["active"] != true || str(in["client_id"]) != clientID {
			t.Fatalf("after %d renders the file holds a token that is not active for the client: %v", len(renders), in)
		}
		exp := num(t, in["exp"], "introspection exp")
		if keys := leaseLookup(t, mount, "app"); len(keys) != 0 {
			t.Fatalf("a lease exists for the lease=false role: %v", keys)
		}
		lookups++
		if content != current {
			r := renderSeen{at: now, left: exp - now.Unix()}
			if current != "" {
				r.outgoing = currentExp - now.Unix()
			}
			renders = append(renders, r)
			current, currentExp = content, exp
		}
		return len(renders) > wantChanges
	})
	stop()
	took := time.Since(start)

	var lefts []string
	for i, r := range renders {
		lefts = append(lefts, fmt.Sprintf("%ds", r.left))
		// The claim: a rendered token has at least the threshold left.
		if r.left < leaselessThreshold-renderSlack {
			t.Errorf("render %d (at +%s) had %ds left, less than the refresh threshold %ds − %ds", i+1, r.at.Sub(start).Round(time.Second), r.left, leaselessThreshold, renderSlack)
		}
		// ttl + 1 s: the Agent read again once the token it had fell just below the threshold.
		if i > 0 && (r.outgoing > leaselessThreshold+1 || r.outgoing < leaselessThreshold-renderSlack-1) {
			t.Errorf("render %d (at +%s) replaced a token with %ds left; the Agent should read again at ttl + 1 s, with %d−%ds left",
				i+1, r.at.Sub(start).Round(time.Second), r.outgoing, leaselessThreshold-renderSlack-1, leaselessThreshold+1)
		}
	}
	if len(renders) <= wantChanges {
		t.Fatalf("the rendered file changed %d times in %s, want %d (token life left at each render: %s)%s",
			max(len(renders)-1, 0), took.Round(time.Second), wantChanges, strings.Join(lefts, ", "), e2eharness.FileTail(filepath.Join(filepath.Dir(rendered), "agent.log"), 30))
	}
	var gaps, outgoing []string
	for i := 1; i < len(renders); i++ {
		gaps = append(gaps, renders[i].at.Sub(renders[i-1].at).Round(time.Second).String())
		outgoing = append(outgoing, fmt.Sprintf("%ds", renders[i].outgoing))
	}
	grants := env.ProviderStats(t).ByClient[clientID] - grants0
	agentReads := agentLogCount(t, rendered, "(runner) receiving dependency vault.read("+creds+")")
	t.Logf("the Agent rendered %d tokens in %s (every %s); life left at each render: %s (threshold %ds); the replaced token's at each change: %s; the provider saw %d grants for the role meanwhile; the Agent read %d times; %d lease lookups, all empty",
		len(renders), took.Round(time.Second), strings.Join(gaps, ", "), strings.Join(lefts, ", "), leaselessThreshold, strings.Join(outgoing, ", "), grants, agentReads, lookups)

	checkLeaselessMetrics(t, mount, clientID, directReads+agentReads)
}

// agentLogCount counts the lines of the Agent's log (next to its rendered file) containing what.
func agentLogCount(t *testing.T, rendered, what string) int {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(filepath.Dir(rendered), "agent.log"))
	must(t, err)
	return strings.Count(string(b), what)
}

// checkLeaselessMetrics: after the Agent run the mount's metrics count every read of the role
// and every grant the provider saw, show the role's token as its status does, both roles in the
// refresher's queue, and the refresher's ticks.
func checkLeaselessMetrics(t *testing.T, mount, clientID string, reads int) {
	t.Helper()
	scraper := metricsScraper(t, mount)
	// The refresher may grant at a tick meanwhile: read the provider's count on both sides.
	var m *metricSamples
	var st roleStatus
	var provider int64
	for {
		before := env.ProviderStats(t).ByClient[clientID]
		m = scrapeMetrics(t, mount, scraper.Token(), headerVaultToken)
		st = readStatus(t, env.client, mount+"/roles/app/status")
		if after := env.ProviderStats(t).ByClient[clientID]; after == before {
			provider = int64(after)
			break
		}
	}

	app := `{role="app"}`
	gotReads := m.value(`vault_oauth_creds_reads_total{result="hit",role="app"}`) + m.value(`vault_oauth_creds_reads_total{result="miss",role="app"}`)
	if int(gotReads) != reads || m.value(`vault_oauth_creds_reads_total{result="stale",role="app"}`) != 0 || m.value(`vault_oauth_creds_reads_total{result="error",role="app"}`) != 0 {
		t.Errorf("creds reads of app: hit+miss %v (stale %v, error %v), want %d (direct and Agent reads): %v",
			gotReads, m.value(`vault_oauth_creds_reads_total{result="stale",role="app"}`), m.value(`vault_oauth_creds_reads_total{result="error",role="app"}`), reads, m.matching("vault_oauth_creds_reads_total"))
	}
	if got := m.value(`vault_oauth_grants_total{grant_type="client_credentials",outcome="success",role="app"}`); int64(got) != provider || int64(got) != st.Grants {
		t.Errorf("grants of app: metrics %v, provider %d, status %d; want all equal", got, provider, st.Grants)
	}
	if got, want := m.value("vault_oauth_token_seconds_left"+app), time.Until(st.ExpiresAt).Seconds(); got < want-2 || got > want+1 {
		t.Errorf("vault_oauth_token_seconds_left%s = %v, the status says %.0f", app, got, want)
	}
	if got := m.value("vault_oauth_refresh_tick_duration_seconds_count"); got < 1 {
		t.Error("the refresher's tick histogram counts no tick over the Agent run (two minutes)")
	}
	if q, r := m.value("vault_oauth_refresh_queue_roles"), m.value("vault_oauth_roles"); q != 2 || r != 2 {
		t.Errorf("refresh queue %v roles, mount %v roles; want 2 and 2", q, r)
	}
	// 90 s tokens are due at every tick (they would expire before the one after): the most
	// overdue has waited for less than one tick and a half.
	if lag := m.value("vault_oauth_refresh_lag_seconds"); lag < 0 || lag > 90 {
		t.Errorf("vault_oauth_refresh_lag_seconds = %v, want 0–90", lag)
	}
	t.Logf("metrics after the Agent run: reads hit %v miss %v; grants %v (provider %d, status %d); %v refresher ticks (%.3fs in all); lag %vs; token %vs left",
		m.value(`vault_oauth_creds_reads_total{result="hit",role="app"}`), m.value(`vault_oauth_creds_reads_total{result="miss",role="app"}`),
		m.value(`vault_oauth_grants_total{grant_type="client_credentials",outcome="success",role="app"}`), provider, st.Grants,
		m.value("vault_oauth_refresh_tick_duration_seconds_count"), m.value("vault_oauth_refresh_tick_duration_seconds_sum"),
		m.value("vault_oauth_refresh_lag_seconds"), m.value("vault_oauth_token_seconds_left"+app))
}
