//go:build e2e

package cluster

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"
)

// tick is the period of Vault's rollback manager, which drives the plugin's PeriodicFunc.
const tick = time.Minute

// startupPassWithin bounds the time from a mount's start (a new leader's election, a plugin
// reload) to the refresh of what is due: the start-up pass, well before the first tick.
const startupPassWithin = 20 * time.Second

// figure prints a measured figure to the test log and to stderr (also without -v).
func figure(t *testing.T, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	t.Log(msg)
	fmt.Fprintf(os.Stderr, "cluster figure: %s: %s\n", t.Name(), msg)
}

// TestStandbyReads: reads of creds/<role> through each node (the standbys forward to the active
// node) return the one cached token, obtained by one grant.
func TestStandbyReads(t *testing.T) {
	active := healthyCluster(t)
	roles := newRoles(t, "sr-"+randSuffix(), 0)
	before := env.ProviderStats(t)
	for _, r := range roles {
		want := readToken(t, active.client, r.name)
		for _, nd := range env.nodes {
			if got := readToken(t, nd.client, r.name); got != want {
				t.Errorf("creds/%s through node %d (%s) is another token than through the active node %d", r.name, nd.n, nodeRole(nd), active.n)
			}
		}
	}
	after := env.ProviderStats(t)
	for _, r := range roles {
		if n := after.ByClient[r.clientID] - before.ByClient[r.clientID]; n != 0 {
			t.Errorf("role %s: %d grants at the provider for reads of a cached token through the nodes", r.name, n)
		}
	}
}

// TestFailover: kill -9 of the active node while roles hold 90 s tokens. A new leader is
// elected, reads through the survivors keep working, the new leader replaces the tokens without
// any read as soon as its mount starts (the start-up pass, within startupPassWithin of the
// election), the refresh_token role's chain is intact, and the failover costs at most one grant
// per role beyond what the ticks make anyway.
func TestFailover(t *testing.T) {
	takeover(t, "fo", true)
}

// TestRejoin: the node killed by TestFailover (or, run alone, the active node killed now) starts
// again, rejoins as a follower, becomes a voter again, and serves reads.
func TestRejoin(t *testing.T) {
	var down *node
	for _, nd := range env.nodes {
		if health(nd) == 0 {
			down = nd
		}
	}
	if down == nil {
		down = healthyCluster(t)
		killNode(t, down)
	}
	active := activeNode(t, 2*time.Minute)
	if active == down {
		t.Fatalf("node %d is down and active", down.n)
	}
	roles := newRoles(t, "rj-"+randSuffix(), 0)

	restartNode(t, down)
	poll(t, 2*time.Minute, 250*time.Millisecond, fmt.Sprintf("node %d as a standby that knows the leader", down.n), func() bool {
		if c := health(down); c != 429 && c != 473 {
			return false
		}
		l, err := down.probe.Sys().Leader()
		return err == nil && !l.IsSelf && l.LeaderAddress == active.addr
	})
	poll(t, 3*time.Minute, 500*time.Millisecond, "three healthy voters after the rejoin", func() bool {
		n, healthy, err := autopilotVoters(active.probe)
		return err == nil && n == 3 && healthy
	})
	st, err := active.client.Sys().RaftAutopilotState()
	must(t, err)
	if s := st.Servers[fmt.Sprintf("node%d", down.n)]; s == nil || s.Status != "voter" || !s.Healthy {
		t.Errorf("autopilot on node %d: %+v; want node%d a healthy voter", active.n, s, down.n)
	}
	for _, r := range roles {
		want := readToken(t, active.client, r.name)
		if got := readToken(t, down.client, r.name); got != want {
			t.Errorf("creds/%s through the rejoined node %d is another token than through the active node", r.name, down.n)
		}
	}
}

// TestStepDown: `vault operator step-down` on the active node hands over to another node, which
// takes over like after a crash: reads keep working, tokens are replaced without reads, the
// refresh_token chain holds.
func TestStepDown(t *testing.T) {
	takeover(t, "sd", false)
}

// takeover runs a change of leader with three roles holding 90 s tokens: by kill -9 of the active
// node (kill) or by a graceful step-down, and measures it.
func takeover(t *testing.T, prefix string, kill bool) {
	old := healthyCluster(t)
	roles := newRoles(t, prefix+"-"+randSuffix(), 90)
	before := map[string]roleStatus{}
	for _, r := range roles {
		st := mustStatus(t, old.client, r.name)
		if st.NextRefresh.IsZero() || st.LastError != "" {
			t.Fatalf("status of %s before the change: %+v; want a planned refresh, no error", r.name, st)
		}
		before[r.name] = st
	}
	statsBefore := env.ProviderStats(t)
	survivors := others(old)

	// Reads through the survivors from the moment of the change, until one succeeds.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	type firstRead struct {
		at time.Time
		nd *node
	}
	first := make(chan firstRead, len(survivors))

	start := time.Now()
	if kill {
		killNode(t, old)
	} else if err := old.client.Sys().StepDown(); err != nil {
		t.Fatalf("step-down of node %d: %v", old.n, err)
	}
	for _, nd := range survivors {
		go func(nd *node) {
			for ctx.Err() == nil {
				s, err := nd.probe.Logical().ReadWithContext(ctx, mount+"/creds/"+roles[0].name)
				if err == nil && s != nil && str(s.Data["access_token"]) != "" {
					first <- firstRead{time.Now(), nd}
					return
				}
				select {
				case <-ctx.Done():
				case <-time.After(100 * time.Millisecond):
				}
			}
		}(nd)
	}

	// The new leader.
	how := "step-down"
	if kill {
		how = "kill -9"
	}
	var leader *node
	poll(t, 2*time.Minute, 100*time.Millisecond, fmt.Sprintf("other active node after the %s of node %d", how, old.n), func() bool {
		for _, nd := range survivors {
			if health(nd) == 200 {
				leader = nd
				return true
			}
		}
		return false
	})
	var elected time.Time
	poll(t, time.Minute, 200*time.Millisecond, "leader answer of the new active node", func() bool {
		l, err := leader.probe.Sys().Leader()
		if err != nil || !l.IsSelf || l.ActiveTime.IsZero() {
			return false
		}
		elected = l.ActiveTime
		return true
	})
	if !kill {
		if h := health(old); h != 429 && h != 473 {
			t.Errorf("node %d after its step-down: sys/health %d, want a standby (429)", old.n, h)
		}
	}

	var fr firstRead
	select {
	case fr = <-first:
	case <-time.After(2 * time.Minute):
		t.Fatalf("no read through the survivors succeeded within 2m of the change")
	}
	cancel()

	// The new leader replaces every token without a read: poll the status, not creds. (Only the
	// first role was read, above, and its token had more than half its lifetime left.)
	refreshed := map[string]time.Time{}
	lastRefresh := map[string]time.Time{}
	poll(t, time.Until(elected.Add(2*tick+30*time.Second)), 250*time.Millisecond, "refresh of every role by the new leader within two ticks", func() bool {
		for _, r := range roles {
			if _, ok := refreshed[r.name]; ok {
				continue
			}
			st, err := readStatus(t, leader.probe, r.name)
			if err == nil && st.Grants > before[r.name].Grants {
				refreshed[r.name] = time.Now()
				lastRefresh[r.name] = st.LastRefresh
			}
		}
		return len(refreshed) == len(roles)
	})
	statsAfter := env.ProviderStats(t)

	var firstRefresh, allRefreshed time.Time
	var firstStamp time.Time
	for _, r := range roles {
		at := refreshed[r.name]
		if firstRefresh.IsZero() || at.Before(firstRefresh) {
			firstRefresh, firstStamp = at, lastRefresh[r.name]
		}
		if at.After(allRefreshed) {
			allRefreshed = at
		}
	}

	// The new leader refreshes what is due when its mount starts, not at its first tick a minute
	// later: every one of these 90 s tokens is due at every tick.
	if gap := allRefreshed.Sub(elected); gap > startupPassWithin {
		t.Errorf("the new leader refreshed the last role %.1fs after its election; want within %s (the start-up pass, not the first tick %s later)", gap.Seconds(), startupPassWithin, tick)
	}

	// Grants: from the change until every role was refreshed by the new leader. Without a change
	// the ticks make at most one grant per role per tick in such a window; the change may add one.
	window := allRefreshed.Sub(start)
	allowed := 1 + int(math.Ceil(window.Seconds()/tick.Seconds()))
	var grants []string
	for _, r := range roles {
		n := statsAfter.ByClient[r.clientID] - statsBefore.ByClient[r.clientID]
		grants = append(grants, fmt.Sprintf("%s=%d", r.name[strings.LastIndex(r.name, "-")+1:], n))
		if n > allowed {
			t.Errorf("role %s: %d grants at the provider in the %.1fs from the change to the new leader's refresh; at most %d (one per tick plus one)", r.name, n, window.Seconds(), allowed)
		}
	}

	// Reads of every role through every remaining node work and give one token (a tick may land
	// between two reads: read again).
	for _, r := range roles {
		poll(t, 30*time.Second, 200*time.Millisecond, "one token for "+r.name+" through every node", func() bool {
			want := readToken(t, leader.client, r.name)
			for _, nd := range survivors {
				if readToken(t, nd.client, r.name) != want {
					return false
				}
			}
			return true
		})
	}

	// The refresh_token chain: a forced grant with the stored refresh token succeeds.
	for _, r := range roles {
		if !r.refreshToken {
			continue
		}
		if err := forceGrant(survivors[0].client, r.name); err != nil {
			t.Errorf("forced grant of %s after the change: %v (the refresh-token chain is broken)", r.name, err)
		}
	}
	for _, r := range roles {
		if st := mustStatus(t, leader.client, r.name); st.LastError != "" {
			t.Errorf("status of %s after the change: last_error %q", r.name, st.LastError)
		}
	}

	figure(t, "%s of node %d; node %d active %.2fs after it", how, old.n, leader.n, elected.Sub(start).Seconds())
	figure(t, "first successful read %.2fs after the %s (through node %d)", fr.at.Sub(start).Seconds(), how, fr.nd.n)
	figure(t, "first refresh by the new leader %.2fs after its election (observed by polling every 250ms; its last_refresh stamp %s, election %s); all %d roles refreshed %.2fs after it",
		firstRefresh.Sub(elected).Seconds(), firstStamp.Format(time.RFC3339), elected.UTC().Format(time.RFC3339Nano), len(roles), allRefreshed.Sub(elected).Seconds())
	figure(t, "grants at the provider from the %s until every role was refreshed (%.1fs): %s", how, window.Seconds(), strings.Join(grants, " "))
}

// TestRollingUpgrade: a second build of the plugin (v0.2.0) is placed on every node, registered
// with -version, the mount tuned to it and the plugin reloaded while a grant of the
// refresh_token role is in flight; cached tokens are served unchanged and without grants, the
// rotated refresh token keeps working, a due 90 s token is refreshed as the reloaded mount starts,
// and after a step-down the next leader runs v0.2.0 too.
func TestRollingUpgrade(t *testing.T) {
	const version = "v0.2.0"
	active := healthyCluster(t)
	roles := newRoles(t, "up-"+randSuffix(), 0)
	var mail role
	for _, r := range roles {
		if r.refreshToken {
			mail = r
		}
	}
	// The stored refresh token is one the provider rotated, not the imported one.
	if err := forceGrant(active.client, mail.name); err != nil {
		t.Fatalf("forced grant of %s: %v", mail.name, err)
	}
	tokens := map[string]string{}
	for _, r := range roles {
		tokens[r.name] = readToken(t, active.client, r.name)
	}
	// short: a 90 s token, due at every tick, which the reloaded mount refreshes as it starts.
	shortID, shortSecret := env.RegisterClient(t, map[string]any{"access_token_ttl": 90})
	short := roles[0].name[:strings.LastIndex(roles[0].name, "-")] + "-short"
	mustWrite(t, active.client, mount+"/roles/"+short, map[string]any{"client_id": shortID, "client_secret": shortSecret, "scopes": "read"})
	readToken(t, active.client, short)

	// Build v0.2.0 and put it next to the running binary on every node.
	built := filepath.Join(env.StateDir, pluginCmd+"-"+version)
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w -X main.version="+version, "-o", built, "./cmd/"+pluginCmd)
	cmd.Dir = env.Root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building the plugin %s: %v\n%s", version, err, out)
	}
	bin, err := os.ReadFile(built)
	must(t, err)
	sum := sha256.Sum256(bin)
	for _, nd := range env.nodes {
		dst := filepath.Join(env.StateDir, fmt.Sprintf("node%d", nd.n), "plugins", pluginCmd+"-"+version)
		must(t, os.WriteFile(dst+".tmp", bin, 0o755))
		must(t, os.Rename(dst+".tmp", dst))
	}
	vaultCLI(t, active, "plugin", "register", "-sha256="+hex.EncodeToString(sum[:]), "-command="+pluginCmd+"-"+version,
		"-version="+version, "secret", "oauth")
	vaultCLI(t, active, "secrets", "tune", "-plugin-version="+version, mount+"/")

	statsBefore := env.ProviderStats(t)
	shortBefore := mustStatus(t, active.client, short).Grants

	// A grant of the refresh_token role in flight across the reload.
	env.SetTokenDelay(t, 3000)
	t.Cleanup(func() { env.SetTokenDelay(t, 0) })
	inflight := make(chan error, 1)
	go func() { inflight <- forceGrant(active.client, mail.name) }()
	poll(t, 30*time.Second, 50*time.Millisecond, "grant in flight at the provider", func() bool {
		return env.ProviderStats(t).InFlight > 0
	})
	reloadStart := time.Now()
	vaultCLI(t, active, "plugin", "reload", "-type=secret", "-plugin=oauth")
	reloadTook := time.Since(reloadStart)
	var inflightErr error
	select {
	case inflightErr = <-inflight:
	case <-time.After(2 * time.Minute):
		t.Fatal("the grant in flight across the reload did not finish within 2m")
	}
	env.SetTokenDelay(t, 0)

	poll(t, time.Minute, 250*time.Millisecond, "mount running "+version, func() bool {
		return runningVersion(active.probe) == version
	})
	// The reloaded mount's start-up pass replaces the 90 s token without a read.
	var shortRefreshed time.Duration
	poll(t, startupPassWithin, 250*time.Millisecond, "refresh of "+short+" by the reloaded mount", func() bool {
		st, err := readStatus(t, active.probe, short)
		if err != nil || st.Grants <= shortBefore {
			return false
		}
		shortRefreshed = time.Since(reloadStart)
		return true
	})

	// Cached tokens: the same ones, through every node, without a grant.
	for _, r := range roles {
		if r.refreshToken {
			continue
		}
		for _, nd := range env.nodes {
			if got := readToken(t, nd.client, r.name); got != tokens[r.name] {
				t.Errorf("creds/%s through node %d after the upgrade is another token", r.name, nd.n)
			}
		}
	}
	statsAfter := env.ProviderStats(t)
	for _, r := range roles {
		if r.refreshToken {
			continue
		}
		if n := statsAfter.ByClient[r.clientID] - statsBefore.ByClient[r.clientID]; n != 0 {
			t.Errorf("role %s: %d grants at the provider across the upgrade, want 0", r.name, n)
		}
	}
	// The refresh-token chain: the next forced grant uses the refresh token the last grant stored.
	if err := forceGrant(active.client, mail.name); err != nil {
		t.Errorf("forced grant of %s after the reload: %v (the refresh-token chain is broken)", mail.name, err)
	}
	if st := mustStatus(t, active.client, mail.name); st.LastError != "" {
		t.Errorf("status of %s after the reload: last_error %q", mail.name, st.LastError)
	}
	mailToken := readToken(t, active.client, mail.name)

	// Rolling: the next active node starts the mount with v0.2.0 from its own plugin directory.
	must(t, active.client.Sys().StepDown())
	var next *node
	poll(t, 2*time.Minute, 200*time.Millisecond, "another active node after the step-down", func() bool {
		for _, nd := range others(active) {
			if health(nd) == 200 {
				next = nd
				return true
			}
		}
		return false
	})
	poll(t, time.Minute, 250*time.Millisecond, "mount on node "+fmt.Sprint(next.n)+" running "+version, func() bool {
		return runningVersion(next.probe) == version
	})
	for _, r := range roles {
		want := tokens[r.name]
		if r.refreshToken {
			want = mailToken
		}
		for _, nd := range env.nodes {
			if got := readToken(t, nd.client, r.name); got != want {
				t.Errorf("creds/%s through node %d after the step-down is another token", r.name, nd.n)
			}
		}
	}
	if err := forceGrant(next.client, mail.name); err != nil {
		t.Errorf("forced grant of %s on the upgraded new leader: %v", mail.name, err)
	}

	inflightResult := "succeeded"
	if inflightErr != nil {
		inflightResult = "failed: " + inflightErr.Error()
	}
	figure(t, "upgrade to %s: reload took %.2fs; the grant in flight across it %s; the 90 s token refreshed %.2fs after the reload began; cached tokens kept (no grant), refresh-token chain intact; node %d took over running %s",
		version, reloadTook.Seconds(), inflightResult, shortRefreshed.Seconds(), next.n, version)
}

// runningVersion is the plugin version the mount runs on the node answering (the active one).
func runningVersion(c *api.Client) string {
	s, err := c.Logical().Read("sys/mounts/" + mount)
	if err != nil || s == nil {
		return ""
	}
	return str(s.Data["running_plugin_version"])
}

// nodeRole names a node's state for messages.
func nodeRole(nd *node) string {
	switch health(nd) {
	case 200:
		return "active"
	case 429, 473, 474:
		return "standby"
	case 0:
		return "down"
	default:
		return "unhealthy"
	}
}
