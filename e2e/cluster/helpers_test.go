//go:build e2e

package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/oauth-broker/vault-plugin-secrets-oauth/internal/e2eharness"
)

// ---- roles ----

// role is a role of the oauth mount with the provider client it uses.
type role struct {
	name, clientID string
	refreshToken   bool // grant_type refresh_token
}

// newRoles writes, under names prefix-*, two client_credentials roles and one refresh_token role
// whose provider clients get ttl-second access tokens (0: the provider's default, an hour), and
// reads each role's first token through the active node.
func newRoles(t *testing.T, prefix string, ttl int) []role {
	t.Helper()
	md := map[string]any{}
	if ttl > 0 {
		md["access_token_ttl"] = ttl
	}
	c := activeNode(t, 60*time.Second).client
	var roles []role
	for _, n := range []string{"cc1", "cc2"} {
		id, secret := env.RegisterClient(t, md)
		r := role{name: prefix + "-" + n, clientID: id}
		mustWrite(t, c, mount+"/roles/"+r.name, map[string]any{"client_id": id, "client_secret": secret, "scopes": "read"})
		roles = append(roles, r)
	}
	rtmd := map[string]any{"grant_types": []string{"password", "refresh_token"}}
	for k, v := range md {
		rtmd[k] = v
	}
	id, secret := env.RegisterClient(t, rtmd)
	r := role{name: prefix + "-mail", clientID: id, refreshToken: true}
	mustWrite(t, c, mount+"/roles/"+r.name, map[string]any{
		"grant_type": "refresh_token", "client_id": id, "client_secret": secret, "refresh_token": env.ObtainRefreshToken(t, id, secret, "read"),
	})
	roles = append(roles, r)
	for _, r := range roles {
		if tok := readToken(t, c, r.name); tok == "" {
			t.Fatalf("creds/%s: no access_token", r.name)
		}
	}
	return roles
}

// readToken reads creds/<role> and returns the access token; anything but a token fails the test.
func readToken(t testing.TB, c *api.Client, name string) string {
	t.Helper()
	s, err := c.Logical().Read(mount + "/creds/" + name)
	if err != nil {
		t.Fatalf("read %s/creds/%s at %s: %v", mount, name, c.Address(), err)
	}
	if s == nil || str(s.Data["access_token"]) == "" {
		t.Fatalf("read %s/creds/%s at %s: no access_token", mount, name, c.Address())
	}
	return str(s.Data["access_token"])
}

// roleStatus is a read of roles/<name>/status.
type roleStatus struct {
	LastRefresh, NextRefresh time.Time
	LastError                string
	Grants                   int64
}

func readStatus(t testing.TB, c *api.Client, name string) (roleStatus, error) {
	t.Helper()
	s, err := c.Logical().Read(mount + "/roles/" + name + "/status")
	if err != nil {
		return roleStatus{}, err
	}
	if s == nil {
		return roleStatus{}, fmt.Errorf("status of %s: empty answer", name)
	}
	var st roleStatus
	for key, dst := range map[string]*time.Time{"last_refresh": &st.LastRefresh, "next_refresh": &st.NextRefresh} {
		if v := str(s.Data[key]); v != "" {
			if *dst, err = time.Parse(time.RFC3339, v); err != nil {
				t.Fatalf("status %s = %q: %v", key, v, err)
			}
		}
	}
	st.LastError = str(s.Data["last_error"])
	g, err := s.Data["grants"].(json.Number).Int64()
	if err != nil {
		t.Fatalf("status grants = %v: %v", s.Data["grants"], err)
	}
	st.Grants = g
	return st, nil
}

func mustStatus(t testing.TB, c *api.Client, name string) roleStatus {
	t.Helper()
	st, err := readStatus(t, c, name)
	if err != nil {
		t.Fatalf("status of %s at %s: %v", name, c.Address(), err)
	}
	return st
}

// forceGrant runs `vault write -force <mount>/rotate/<role>`: a grant now, whatever is cached.
func forceGrant(c *api.Client, name string) error {
	_, err := c.Logical().Write(mount+"/rotate/"+name, map[string]any{})
	return err
}

// ---- the cluster ----

// health is a node's sys/health status code: 200 active, 429/473/474 standby, 503 sealed; 0 when
// it does not answer.
func health(nd *node) int {
	resp, err := e2eharness.HTTPClient.Get(nd.addr + "/v1/sys/health")
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

// activeNode polls until a node answers as the active one.
func activeNode(t testing.TB, within time.Duration) *node {
	t.Helper()
	var found *node
	poll(t, within, 200*time.Millisecond, "a node to be active", func() bool {
		for _, nd := range env.nodes {
			if health(nd) == http.StatusOK {
				found = nd
				return true
			}
		}
		return false
	})
	return found
}

// others are the nodes but nd.
func others(nd *node) []*node {
	var out []*node
	for _, o := range env.nodes {
		if o != nd {
			out = append(out, o)
		}
	}
	return out
}

// autopilotVoters is the number of voters autopilot reports, and whether it calls the cluster
// healthy.
func autopilotVoters(c *api.Client) (int, bool, error) {
	st, err := c.Sys().RaftAutopilotStateWithContext(context.Background())
	if err != nil {
		return 0, false, err
	}
	if st == nil {
		return 0, false, errors.New("no autopilot state")
	}
	return len(st.Voters), st.Healthy, nil
}

// healthyCluster waits until all three nodes are up, one active, and autopilot counts three
// healthy voters: a node killed by an earlier test is started again first.
func healthyCluster(t testing.TB) *node {
	t.Helper()
	for _, nd := range env.nodes {
		if health(nd) == 0 {
			restartNode(t, nd)
		}
	}
	var active *node
	poll(t, 3*time.Minute, 500*time.Millisecond, "three healthy voters", func() bool {
		active = activeNode(t, time.Minute)
		n, healthy, err := autopilotVoters(active.probe)
		return err == nil && n == 3 && healthy
	})
	return active
}

func killNode(t testing.TB, nd *node) {
	t.Helper()
	if _, err := env.RunScript("scripts/cluster.sh", "kill-node", env.StateDir, fmt.Sprint(nd.n)); err != nil {
		t.Fatalf("killing node %d: %v", nd.n, err)
	}
}

func restartNode(t testing.TB, nd *node) {
	t.Helper()
	if _, err := env.RunScript("scripts/cluster.sh", "restart-node", env.StateDir, fmt.Sprint(nd.n)); err != nil {
		t.Fatalf("restarting node %d: %v%s", nd.n, err, env.LogTails(fmt.Sprintf("node%d/vault.log", nd.n)))
	}
}

// vaultCLI runs the Vault CLI against nd as root.
func vaultCLI(t testing.TB, nd *node, args ...string) string {
	t.Helper()
	cmd := exec.Command(env.VaultBin, args...)
	cmd.Env = append(e2eharness.CleanEnv(), "VAULT_ADDR="+nd.addr, "VAULT_TOKEN="+env.rootToken, "HOME="+env.StateDir)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("vault %s (node %d): %v\n%s", strings.Join(args, " "), nd.n, err, out)
	}
	return string(out)
}

// ---- small helpers ----

// poll calls cond every interval until it is true; after within it fails the test.
func poll(t testing.TB, within, interval time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		if cond() {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %s within %s", what, within)
		}
		time.Sleep(interval)
	}
}

func mustWrite(t testing.TB, c *api.Client, path string, data map[string]any) {
	t.Helper()
	if _, err := c.Logical().Write(path, data); err != nil {
		t.Fatalf("write %s: %v", path, err)
	}
}

// Shorthands for the shared helpers the tests use everywhere.
var (
	must       = e2eharness.Must
	str        = e2eharness.Str
	randSuffix = e2eharness.RandSuffix
)
