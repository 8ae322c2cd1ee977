//go:build e2e

// Package cluster runs the plugin in a three-node Vault cluster with integrated storage (Raft)
// against the real test OAuth provider: standby reads, a killed leader, a graceful step-down, a
// node rejoining, and a rolling plugin upgrade (issue 15).
//
// TestMain starts the provider (scripts/provider.sh) and the cluster (scripts/cluster.sh: three
// Vault processes on 127.0.0.1, the plugin registered once and mounted at oauth/), runs the tests
// in file order (they share the cluster; each sets up its own roles), and stops everything again,
// also when a test panics, the run times out or is interrupted (a detached watchdog stops the
// servers once this process is gone).
//
//	E2E_CLUSTER=1 go test -count=1 -tags e2e -timeout 40m ./e2e/cluster -v   (or make e2e-cluster)
//
// Env:
//
//	E2E_CLUSTER=1  run at all: without it the package passes at once, so that ./e2e/... (make e2e)
//	               does not start a cluster
//	E2E_STATE_DIR  where the servers keep their state and logs (default .e2e/cluster-<pid>)
//	E2E_KEEP=1     keep the state dir after a passing run (a failing run always keeps it)
//	PLUGIN_BIN     the plugin binary the cluster starts with (default bin/vault-plugin-secrets-oauth,
//	               built with `make build` when missing or older than a Go source, unless
//	               E2E_NO_BUILD=1); the upgrade test builds its second version from the working tree
//
// The harness (state dir, scripts, watchdog, provider) is internal/e2eharness, shared with ./e2e.
package cluster

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/oauth-broker/vault-plugin-secrets-oauth/internal/e2eharness"
)

const (
	pluginCmd = e2eharness.PluginCmd
	mount     = "oauth"
)

// env is what TestMain set up. The Suite holds the repository root, the state dir, the Vault
// binary and the provider.
var env = struct {
	*e2eharness.Suite
	pluginBin string
	rootToken string
	nodes     []*node // nodes[0] is node 1
}{Suite: &e2eharness.Suite{
	Name:        "cluster",
	StopScripts: []string{"scripts/cluster.sh"},
	KeptLogs:    "node*/vault.log, provider.log",
}}

// node is one Vault server of the cluster.
type node struct {
	n      int
	addr   string
	client *api.Client // 60 s timeout, Vault's retries
	probe  *api.Client // 3 s timeout, no retries: for polling while the cluster changes
}

func TestMain(m *testing.M) {
	// ./e2e/... (scripts/e2e.sh) includes this package: it runs only when asked for.
	if os.Getenv("E2E_CLUSTER") != "1" {
		fmt.Fprintln(os.Stderr, "cluster: skipped (set E2E_CLUSTER=1, or run make e2e-cluster)")
		os.Exit(0)
	}
	os.Exit(env.Main(m, setup, nil))
}

func setup() error {
	if err := env.MakeStateDir("cluster"); err != nil {
		return err
	}
	env.pluginBin = os.Getenv("PLUGIN_BIN")
	if env.pluginBin == "" {
		if err := env.EnsurePlugin(); err != nil {
			return err
		}
		env.pluginBin = filepath.Join(env.Root, "bin", pluginCmd)
	}
	var err error
	if env.pluginBin, err = filepath.Abs(env.pluginBin); err != nil {
		return err
	}
	env.ScriptEnv = []string{"PLUGIN_BIN=" + env.pluginBin}
	if err := env.StartProvider(); err != nil {
		return err
	}
	env.ScriptEnv = append(env.ScriptEnv, "VAULT_BIN="+env.VaultBin)

	if _, err = env.RunScript("scripts/cluster.sh", "start", env.StateDir); err != nil {
		return fmt.Errorf("starting the cluster: %w%s", err, env.LogTails("node*/vault.log"))
	}
	vars, err := e2eharness.ReadEnvFile(filepath.Join(env.StateDir, "cluster.env"), "VAULT_TOKEN")
	if err != nil {
		return err
	}
	env.rootToken = vars["VAULT_TOKEN"]
	for n := 1; n <= 3; n++ {
		addr := vars[fmt.Sprintf("NODE%d_ADDR", n)]
		if !strings.HasPrefix(addr, "http://127.0.0.1:") {
			return fmt.Errorf("cluster.env: NODE%d_ADDR=%q", n, addr)
		}
		nd := &node{n: n, addr: addr}
		if nd.client, err = newClient(addr, 60*time.Second, 2); err != nil {
			return err
		}
		if nd.probe, err = newClient(addr, 3*time.Second, 0); err != nil {
			return err
		}
		env.nodes = append(env.nodes, nd)
	}
	if _, err := env.nodes[0].client.Logical().Write(mount+"/config", map[string]any{"issuer": env.ProviderURL}); err != nil {
		return fmt.Errorf("writing %s/config: %w", mount, err)
	}
	fmt.Fprintf(os.Stderr, "cluster: nodes %s %s %s, provider %s\n", env.nodes[0].addr, env.nodes[1].addr, env.nodes[2].addr, env.ProviderURL)
	return nil
}

func newClient(addr string, timeout time.Duration, retries int) (*api.Client, error) {
	cfg := e2eharness.VaultConfig(addr, timeout)
	cfg.MaxRetries = retries
	c, err := api.NewClient(cfg)
	if err != nil {
		return nil, err
	}
	c.SetToken(env.rootToken)
	return c, nil
}
