//go:build e2e

package cluster

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"
)

var httpClient = &http.Client{Timeout: 30 * time.Second}

// ---- the OAuth provider ----

// registerClient registers a client at the provider (RFC 7591, open registration): by default a
// confidential client_credentials client with scopes "read write"; metadata overrides.
func registerClient(t testing.TB, metadata map[string]any) (id, secret string) {
	t.Helper()
	md := map[string]any{
		"grant_types":                []string{"client_credentials"},
		"token_endpoint_auth_method": "client_secret_basic",
		"scope":                      "read write",
		"response_types":             []string{},
		"redirect_uris":              []string{},
	}
	for k, v := range metadata {
		md[k] = v
	}
	body, err := json.Marshal(md)
	must(t, err)
	resp, err := httpClient.Post(env.discovery.RegistrationEndpoint, "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatalf("client registration: %v", err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusCreated && resp.StatusCode != http.StatusOK {
		t.Fatalf("client registration: %s: %s", resp.Status, raw)
	}
	var out struct {
		ClientID     string `json:"client_id"`
		ClientSecret string `json:"client_secret"`
	}
	if err := json.Unmarshal(raw, &out); err != nil || out.ClientID == "" {
		t.Fatalf("client registration: bad answer %s (%v)", raw, err)
	}
	return out.ClientID, out.ClientSecret
}

// obtainRefreshToken signs alice in with the password grant and returns the refresh token.
func obtainRefreshToken(t testing.TB, id, secret string) string {
	t.Helper()
	form := url.Values{"grant_type": {"password"}, "username": {"alice"}, "password": {"alice-password"}, "scope": {"read"}}
	req, err := http.NewRequest(http.MethodPost, env.discovery.TokenEndpoint, strings.NewReader(form.Encode()))
	must(t, err)
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(url.QueryEscape(id), url.QueryEscape(secret))
	resp, err := httpClient.Do(req)
	must(t, err)
	defer resp.Body.Close()
	var out struct {
		RefreshToken string `json:"refresh_token"`
	}
	must(t, json.NewDecoder(resp.Body).Decode(&out))
	if out.RefreshToken == "" {
		t.Fatalf("password grant at the provider returned no refresh token (HTTP %d)", resp.StatusCode)
	}
	return out.RefreshToken
}

// stats is the provider's GET /test/stats answer (the part these tests use).
type stats struct {
	TokenRequests int            `json:"token_requests"`
	ByClient      map[string]int `json:"by_client"`
	InFlight      int            `json:"in_flight"`
}

func providerStats(t testing.TB) stats {
	t.Helper()
	resp, err := httpClient.Get(env.providerURL + "/test/stats")
	if err != nil {
		t.Fatalf("provider stats: %v", err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("provider stats: %s: %s", resp.Status, raw)
	}
	var s stats
	if err := json.Unmarshal(raw, &s); err != nil {
		t.Fatalf("provider stats: %v: %s", err, raw)
	}
	return s
}

// setTokenDelay makes the provider hold every token request for ms milliseconds.
func setTokenDelay(t testing.TB, ms int) {
	t.Helper()
	resp, err := httpClient.Post(env.providerURL+"/test/config", "application/json",
		strings.NewReader(fmt.Sprintf(`{"token_delay_ms": %d}`, ms)))
	if err != nil {
		t.Fatalf("provider config: %v", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		raw, _ := io.ReadAll(resp.Body)
		t.Fatalf("provider config: %s: %s", resp.Status, raw)
	}
}

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
		id, secret := registerClient(t, md)
		r := role{name: prefix + "-" + n, clientID: id}
		mustWrite(t, c, mount+"/roles/"+r.name, map[string]any{"client_id": id, "client_secret": secret, "scopes": "read"})
		roles = append(roles, r)
	}
	rtmd := map[string]any{"grant_types": []string{"password", "refresh_token"}}
	for k, v := range md {
		rtmd[k] = v
	}
	id, secret := registerClient(t, rtmd)
	r := role{name: prefix + "-mail", clientID: id, refreshToken: true}
	mustWrite(t, c, mount+"/roles/"+r.name, map[string]any{
		"grant_type": "refresh_token", "client_id": id, "client_secret": secret, "refresh_token": obtainRefreshToken(t, id, secret),
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
	resp, err := httpClient.Get(nd.addr + "/v1/sys/health")
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
	if _, err := runScript("scripts/cluster.sh", "kill-node", env.stateDir, fmt.Sprint(nd.n)); err != nil {
		t.Fatalf("killing node %d: %v", nd.n, err)
	}
}

func restartNode(t testing.TB, nd *node) {
	t.Helper()
	if _, err := runScript("scripts/cluster.sh", "restart-node", env.stateDir, fmt.Sprint(nd.n)); err != nil {
		t.Fatalf("restarting node %d: %v%s", nd.n, err, logTails(fmt.Sprintf("node%d/vault.log", nd.n)))
	}
}

// vaultCLI runs the Vault CLI against nd as root.
func vaultCLI(t testing.TB, nd *node, args ...string) string {
	t.Helper()
	cmd := exec.Command(env.vaultBin, args...)
	cmd.Env = append(cleanEnv(), "VAULT_ADDR="+nd.addr, "VAULT_TOKEN="+env.rootToken, "HOME="+env.stateDir)
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

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func str(v any) string {
	if v == nil {
		return ""
	}
	if s, ok := v.(string); ok {
		return s
	}
	return fmt.Sprint(v)
}

func randSuffix() string {
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func cleanEnv() []string {
	var out []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "VAULT_") {
			out = append(out, kv)
		}
	}
	return out
}
