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
//	               built with `make build` when missing); the upgrade test builds its second
//	               version from the working tree
package cluster

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"
)

const (
	pluginCmd = "vault-plugin-secrets-oauth"
	mount     = "oauth"
)

// env is what TestMain set up.
var env struct {
	root        string
	stateDir    string
	vaultBin    string
	pluginBin   string
	rootToken   string
	providerURL string
	discovery   discovery
	nodes       []*node // nodes[0] is node 1
}

// node is one Vault server of the cluster.
type node struct {
	n      int
	addr   string
	client *api.Client // 60 s timeout, Vault's retries
	probe  *api.Client // 3 s timeout, no retries: for polling while the cluster changes
}

type discovery struct {
	Issuer               string `json:"issuer"`
	TokenEndpoint        string `json:"token_endpoint"`
	RegistrationEndpoint string `json:"registration_endpoint"`
}

var (
	teardownOnce sync.Once
	watchdog     *exec.Cmd
)

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) (code int) {
	// ./e2e/... (scripts/e2e.sh) includes this package: it runs only when asked for.
	if os.Getenv("E2E_CLUSTER") != "1" {
		fmt.Fprintln(os.Stderr, "cluster: skipped (set E2E_CLUSTER=1, or run make e2e-cluster)")
		return 0
	}
	code = 1
	if err := setup(); err != nil {
		fmt.Fprintf(os.Stderr, "\n=== cluster setup FAILED ===\n%v\n", err)
		teardown(false)
		return 1
	}
	defer func() {
		if r := recover(); r != nil {
			fmt.Fprintf(os.Stderr, "cluster: panic: %v\n", r)
			code = 1
		}
		teardown(code == 0)
	}()
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	go func() {
		s := <-sigs
		fmt.Fprintf(os.Stderr, "\ncluster: got %v: stopping the servers\n", s)
		teardown(false)
		os.Exit(2)
	}()
	return m.Run()
}

func setup() error {
	root, err := repoRoot()
	if err != nil {
		return err
	}
	env.root = root
	env.stateDir = os.Getenv("E2E_STATE_DIR")
	if env.stateDir == "" {
		env.stateDir = filepath.Join(root, ".e2e", fmt.Sprintf("cluster-%d", os.Getpid()))
	}
	if env.stateDir, err = filepath.Abs(env.stateDir); err != nil {
		return err
	}
	if err := os.MkdirAll(env.stateDir, 0o700); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "cluster: state dir %s\n", env.stateDir)

	env.pluginBin = os.Getenv("PLUGIN_BIN")
	if env.pluginBin == "" {
		env.pluginBin = filepath.Join(root, "bin", pluginCmd)
		if _, err := os.Stat(env.pluginBin); err != nil {
			fmt.Fprintf(os.Stderr, "cluster: building the plugin (make build)\n")
			cmd := exec.Command("make", "build")
			cmd.Dir = root
			if out, err := cmd.CombinedOutput(); err != nil {
				return fmt.Errorf("make build failed: %v\n%s", err, out)
			}
		}
	}
	if env.pluginBin, err = filepath.Abs(env.pluginBin); err != nil {
		return err
	}
	// The Vault build can take minutes the very first time: do it before any server starts.
	out, err := runScript("scripts/vault-binary.sh")
	if err != nil {
		return fmt.Errorf("getting the Vault binary: %w", err)
	}
	env.vaultBin = lastLine(out)

	startWatchdog()

	out, err = runScript("scripts/provider.sh", "start", env.stateDir)
	if err != nil {
		return fmt.Errorf("starting the OAuth provider: %w", err)
	}
	env.providerURL = strings.TrimRight(lastLine(out), "/")
	if !strings.HasPrefix(env.providerURL, "http://127.0.0.1:") {
		return fmt.Errorf("provider.sh printed %q, want http://127.0.0.1:PORT", env.providerURL)
	}
	if env.discovery, err = fetchDiscovery(env.providerURL); err != nil {
		return fmt.Errorf("provider discovery: %w", err)
	}

	if _, err = runScript("scripts/cluster.sh", "start", env.stateDir); err != nil {
		return fmt.Errorf("starting the cluster: %w%s", err, logTails("node*/vault.log"))
	}
	vars, err := readEnvFile(filepath.Join(env.stateDir, "cluster.env"))
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
	if _, err := env.nodes[0].client.Logical().Write(mount+"/config", map[string]any{"issuer": env.providerURL}); err != nil {
		return fmt.Errorf("writing %s/config: %w", mount, err)
	}
	fmt.Fprintf(os.Stderr, "cluster: nodes %s %s %s, provider %s\n", env.nodes[0].addr, env.nodes[1].addr, env.nodes[2].addr, env.providerURL)
	return nil
}

func newClient(addr string, timeout time.Duration, retries int) (*api.Client, error) {
	cfg := api.DefaultConfig()
	cfg.Address = addr
	cfg.Timeout = timeout
	cfg.MaxRetries = retries
	c, err := api.NewClient(cfg)
	if err != nil {
		return nil, err
	}
	c.SetToken(env.rootToken)
	return c, nil
}

// teardown stops the servers; the state dir is removed after a passing run unless E2E_KEEP=1.
func teardown(passed bool) {
	teardownOnce.Do(func() {
		if env.stateDir == "" {
			return
		}
		if _, err := runScript("scripts/cluster.sh", "stop", env.stateDir); err != nil {
			fmt.Fprintf(os.Stderr, "cluster: stopping the cluster: %v\n", err)
		}
		if _, err := runScript("scripts/provider.sh", "stop", env.stateDir); err != nil {
			fmt.Fprintf(os.Stderr, "cluster: stopping the provider: %v\n", err)
		}
		if watchdog != nil && watchdog.Process != nil {
			_ = watchdog.Process.Kill()
			_, _ = watchdog.Process.Wait()
		}
		if passed && os.Getenv("E2E_KEEP") != "1" && os.Getenv("E2E_STATE_DIR") == "" {
			_ = os.RemoveAll(env.stateDir)
		} else {
			fmt.Fprintf(os.Stderr, "cluster: logs kept in %s (node*/vault.log, provider.log)\n", env.stateDir)
		}
	})
}

// startWatchdog starts a detached shell that stops the servers once this test process is gone,
// whatever the reason (panic, -timeout, SIGKILL). A normal teardown kills it first.
func startWatchdog() {
	script := `
while kill -0 "$1" 2>/dev/null; do sleep 0.5; done
"$2/scripts/cluster.sh" stop "$3" || true
"$2/scripts/provider.sh" stop "$3" || true
echo "watchdog: stopped the servers of the dead test process $1"
`
	cmd := exec.Command("bash", "-c", script, "cluster-watchdog", strconv.Itoa(os.Getpid()), env.root, env.stateDir)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if f, err := os.OpenFile(filepath.Join(env.stateDir, "watchdog.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600); err == nil {
		cmd.Stdout, cmd.Stderr = f, f
		// The watchdog writes through a descriptor of its own; this one only opened the file.
		defer f.Close() //nolint:errcheck // nothing was written through it
	}
	if err := cmd.Start(); err != nil {
		fmt.Fprintf(os.Stderr, "cluster: could not start the watchdog: %v\n", err)
		return
	}
	watchdog = cmd
}

func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("go.mod not found above the working directory")
		}
		dir = parent
	}
}

// runScript runs a repo script with PLUGIN_BIN set; stderr is passed through, stdout returned.
func runScript(script string, args ...string) (string, error) {
	cmd := exec.Command(filepath.Join(env.root, script), args...)
	cmd.Dir = env.root
	cmd.Env = append(os.Environ(), "PLUGIN_BIN="+env.pluginBin)
	if env.vaultBin != "" {
		cmd.Env = append(cmd.Env, "VAULT_BIN="+env.vaultBin)
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout = &stdout
	cmd.Stderr = io.MultiWriter(os.Stderr, &stderr)
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("%s %s: %v\n--- stderr ---\n%s", script, strings.Join(args, " "), err, tail(stderr.String(), 40))
	}
	return stdout.String(), nil
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return strings.TrimSpace(lines[len(lines)-1])
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// logTails renders the last lines of the state dir's log files matching the patterns.
func logTails(patterns ...string) string {
	var b strings.Builder
	for _, pat := range patterns {
		files, _ := filepath.Glob(filepath.Join(env.stateDir, pat))
		for _, f := range files {
			if data, err := os.ReadFile(f); err == nil {
				fmt.Fprintf(&b, "\n--- last lines of %s ---\n%s", f, tail(string(data), 30))
			}
		}
	}
	return b.String()
}

func readEnvFile(path string) (map[string]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close() //nolint:errcheck // read-only: closing it cannot lose anything
	vars := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if k, v, ok := strings.Cut(strings.TrimSpace(sc.Text()), "="); ok {
			vars[k] = v
		}
	}
	if vars["VAULT_TOKEN"] == "" {
		return nil, fmt.Errorf("%s lacks VAULT_TOKEN", path)
	}
	return vars, sc.Err()
}

func fetchDiscovery(issuer string) (discovery, error) {
	var d discovery
	var lastErr error
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		resp, err := http.Get(issuer + "/.well-known/openid-configuration")
		if err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				if err := json.Unmarshal(body, &d); err != nil {
					return d, err
				}
				if d.TokenEndpoint == "" || d.RegistrationEndpoint == "" {
					return d, fmt.Errorf("token or registration endpoint missing: %s", body)
				}
				return d, nil
			}
			err = fmt.Errorf("%s: %s", resp.Status, body)
		}
		lastErr = err
		time.Sleep(200 * time.Millisecond)
	}
	return d, lastErr
}
