//go:build e2e

// Package e2e runs the plugin inside a real Vault server against a real OAuth 2.0 provider.
//
// TestMain starts the test provider (scripts/provider.sh) and a dev-mode Vault with the plugin
// registered as "oauth" and mounted at oauth/ (scripts/vault.sh --audit), runs the tests, and stops
// both again, also when a test panics, the run times out or is interrupted (a detached watchdog
// stops them once this process is gone). After the last test it runs the leak scan
// (leakscan_test.go), which fails the run if a secret the suite used shows up in Vault's logs,
// the audit log, or a config/roles answer or error text.
//
//	go test -race -count=1 -tags e2e ./e2e/... -v      (or scripts/e2e.sh, or make e2e)
//
// Env:
//
//	E2E_STATE_DIR  where the servers keep their state and logs (default .e2e/run-<pid>)
//	E2E_KEEP=1     keep the state dir after a passing run (a failing run always keeps it)
//	E2E_RAFT=1     run Vault with raft storage instead of dev mode
//	E2E_NO_BUILD=1 use bin/vault-plugin-secrets-oauth as it is (scripts/e2e.sh sets it); otherwise
//	               TestMain runs `make build` when the binary is missing or older than a Go source
//
// The harness (state dir, scripts, watchdog, provider) is internal/e2eharness, shared with
// ./e2e/cluster.
package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/oauth-broker/vault-plugin-secrets-oauth/internal/e2eharness"
)

// env is what TestMain set up; the tests only read it. The Suite holds the repository root, the
// state dir, the Vault binary (also used for `vault agent`) and the provider.
var env = struct {
	*e2eharness.Suite
	vaultAddr string
	rootToken string
	client    *api.Client // root client
}{Suite: &e2eharness.Suite{
	Name:        "e2e",
	StopScripts: []string{"scripts/vault.sh"},
	KeptLogs:    "vault.log, audit.log, provider logs",
}}

func TestMain(m *testing.M) {
	// After every test, before the servers stop: no secret may be in Vault's logs or answers.
	os.Exit(env.Main(m, setup, func() bool { return leakScanPasses(os.Stderr) }))
}

func setup() error {
	if err := env.MakeStateDir("run"); err != nil {
		return err
	}
	if err := env.EnsurePlugin(); err != nil {
		return err
	}
	if err := env.StartProvider(); err != nil {
		return err
	}

	// Vault.
	args := []string{"start", env.StateDir, "--audit"}
	if os.Getenv("E2E_RAFT") == "1" {
		args = append(args, "--raft")
	}
	if _, err := env.RunScript("scripts/vault.sh", args...); err != nil {
		return fmt.Errorf("starting Vault: %w%s", err, env.LogTails("vault.log"))
	}
	vars, err := e2eharness.ReadEnvFile(filepath.Join(env.StateDir, "vault.env"), "VAULT_ADDR", "VAULT_TOKEN")
	if err != nil {
		return err
	}
	env.vaultAddr, env.rootToken = vars["VAULT_ADDR"], vars["VAULT_TOKEN"]

	c, err := api.NewClient(e2eharness.VaultConfig(env.vaultAddr, 60*time.Second))
	if err != nil {
		return err
	}
	c.SetToken(env.rootToken)
	env.client = c

	mounts, err := c.Sys().ListMounts()
	if err != nil {
		return fmt.Errorf("listing mounts: %w%s", err, env.LogTails("vault.log"))
	}
	if m, ok := mounts["oauth/"]; !ok || m.Type != "oauth" {
		return fmt.Errorf("the oauth plugin is not mounted at oauth/ (mounts: %v)%s", mountNames(mounts), env.LogTails("vault.log"))
	}
	fmt.Fprintf(os.Stderr, "e2e: vault %s, provider %s\n", env.vaultAddr, env.ProviderURL)
	return nil
}

func mountNames(m map[string]*api.MountOutput) []string {
	var names []string
	for k, v := range m {
		names = append(names, k+"("+v.Type+")")
	}
	return names
}
