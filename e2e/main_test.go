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
package e2e

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
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

const pluginCmd = "vault-plugin-secrets-oauth"

// env is what TestMain set up; the tests only read it.
var env struct {
	root      string // repository root
	stateDir  string // shared state dir of the provider and Vault
	vaultBin  string // the Vault binary (also used for `vault agent`)
	vaultAddr string
	rootToken string
	client    *api.Client // root client

	providerURL string    // issuer
	discovery   discovery // the provider's metadata
}

type discovery struct {
	Issuer                string `json:"issuer"`
	TokenEndpoint         string `json:"token_endpoint"`
	RegistrationEndpoint  string `json:"registration_endpoint"`
	IntrospectionEndpoint string `json:"introspection_endpoint"`
	RevocationEndpoint    string `json:"revocation_endpoint"`
	JWKSURI               string `json:"jwks_uri"`
}

var (
	teardownOnce sync.Once
	watchdog     *exec.Cmd
)

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) (code int) {
	code = 1
	if err := setup(); err != nil {
		fmt.Fprintf(os.Stderr, "\n=== e2e setup FAILED ===\n%v\n", err)
		teardown(false)
		return 1
	}
	defer func() {
		if r := recover(); r != nil {
			fmt.Fprintf(os.Stderr, "e2e: panic: %v\n", r)
			code = 1
		}
		teardown(code == 0)
	}()

	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	go func() {
		s := <-sigs
		fmt.Fprintf(os.Stderr, "\ne2e: got %v: stopping the servers\n", s)
		teardown(false)
		os.Exit(2)
	}()

	code = m.Run()
	// After every test, before the servers stop: no secret may be in Vault's logs or answers.
	if !leakScanPasses(os.Stderr) {
		code = 1
	}
	return code
}

func setup() error {
	root, err := repoRoot()
	if err != nil {
		return err
	}
	env.root = root

	env.stateDir = os.Getenv("E2E_STATE_DIR")
	if env.stateDir == "" {
		env.stateDir = filepath.Join(root, ".e2e", fmt.Sprintf("run-%d", os.Getpid()))
	}
	if env.stateDir, err = filepath.Abs(env.stateDir); err != nil {
		return err
	}
	if err := os.MkdirAll(env.stateDir, 0o700); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "e2e: state dir %s\n", env.stateDir)

	if err := ensurePlugin(); err != nil {
		return err
	}
	// The Vault build can take minutes the very first time: do it before any server starts.
	out, err := runScript("scripts/vault-binary.sh")
	if err != nil {
		return fmt.Errorf("getting the Vault binary: %w", err)
	}
	env.vaultBin = lastLine(out)

	startWatchdog()

	// The provider.
	out, err = runScript("scripts/provider.sh", "start", env.stateDir)
	if err != nil {
		return fmt.Errorf("starting the OAuth provider: %w%s", err, logTails("provider*.log", "*provider*/*.log"))
	}
	env.providerURL = strings.TrimRight(lastLine(out), "/")
	if env.providerURL == "" {
		if b, rerr := os.ReadFile(filepath.Join(env.stateDir, "provider.url")); rerr == nil {
			env.providerURL = strings.TrimRight(strings.TrimSpace(string(b)), "/")
		}
	}
	if !strings.HasPrefix(env.providerURL, "http://127.0.0.1:") {
		return fmt.Errorf("provider.sh printed %q, want http://127.0.0.1:PORT%s", env.providerURL, logTails("provider*.log"))
	}
	if env.discovery, err = fetchDiscovery(env.providerURL); err != nil {
		return fmt.Errorf("provider discovery: %w%s", err, logTails("provider*.log"))
	}

	// Vault.
	args := []string{"start", env.stateDir, "--audit"}
	if os.Getenv("E2E_RAFT") == "1" {
		args = append(args, "--raft")
	}
	if _, err = runScript("scripts/vault.sh", args...); err != nil {
		return fmt.Errorf("starting Vault: %w%s", err, logTails("vault.log"))
	}
	vars, err := readEnvFile(filepath.Join(env.stateDir, "vault.env"))
	if err != nil {
		return err
	}
	env.vaultAddr, env.rootToken = vars["VAULT_ADDR"], vars["VAULT_TOKEN"]

	cfg := api.DefaultConfig()
	cfg.Address = env.vaultAddr
	cfg.Timeout = 60 * time.Second
	c, err := api.NewClient(cfg)
	if err != nil {
		return err
	}
	c.SetToken(env.rootToken)
	env.client = c

	mounts, err := c.Sys().ListMounts()
	if err != nil {
		return fmt.Errorf("listing mounts: %w%s", err, logTails("vault.log"))
	}
	if m, ok := mounts["oauth/"]; !ok || m.Type != "oauth" {
		return fmt.Errorf("the oauth plugin is not mounted at oauth/ (mounts: %v)%s", mountNames(mounts), logTails("vault.log"))
	}
	fmt.Fprintf(os.Stderr, "e2e: vault %s, provider %s\n", env.vaultAddr, env.providerURL)
	return nil
}

// teardown stops the servers; the state dir is removed after a passing run unless E2E_KEEP=1.
func teardown(passed bool) {
	teardownOnce.Do(func() {
		if env.stateDir == "" {
			return
		}
		killExtraPids()
		if _, err := runScript("scripts/vault.sh", "stop", env.stateDir); err != nil {
			fmt.Fprintf(os.Stderr, "e2e: stopping Vault: %v\n", err)
		}
		if _, err := runScript("scripts/provider.sh", "stop", env.stateDir); err != nil {
			fmt.Fprintf(os.Stderr, "e2e: stopping the provider: %v\n", err)
		}
		if watchdog != nil && watchdog.Process != nil {
			_ = watchdog.Process.Kill()
			_, _ = watchdog.Process.Wait()
		}
		if passed && os.Getenv("E2E_KEEP") != "1" && os.Getenv("E2E_STATE_DIR") == "" {
			_ = os.RemoveAll(env.stateDir)
		} else {
			fmt.Fprintf(os.Stderr, "e2e: logs kept in %s (vault.log, audit.log, provider logs)\n", env.stateDir)
		}
	})
}

// startWatchdog starts a detached shell that stops everything once this test process is gone,
// whatever the reason (panic in a test, -timeout, SIGKILL). A normal teardown kills it first.
func startWatchdog() {
	script := `
while kill -0 "$1" 2>/dev/null; do sleep 0.5; done
if [ -f "$3/extra.pids" ]; then
  while read -r p; do kill -TERM "$p" 2>/dev/null || true; done <"$3/extra.pids"
fi
"$2/scripts/vault.sh" stop "$3" || true
"$2/scripts/provider.sh" stop "$3" || true
echo "watchdog: stopped the servers of the dead test process $1"
`
	cmd := exec.Command("bash", "-c", script, "e2e-watchdog", strconv.Itoa(os.Getpid()), env.root, env.stateDir)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	logFile, err := os.OpenFile(filepath.Join(env.stateDir, "watchdog.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		fmt.Fprintf(os.Stderr, "e2e: the watchdog logs nowhere: %v\n", err)
	} else {
		cmd.Stdout, cmd.Stderr = logFile, logFile
	}
	err = cmd.Start()
	if logFile != nil {
		// The watchdog has a descriptor of its own now (or never started).
		if cerr := logFile.Close(); cerr != nil {
			fmt.Fprintf(os.Stderr, "e2e: closing the watchdog's log: %v\n", cerr)
		}
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "e2e: could not start the watchdog: %v\n", err)
		return
	}
	watchdog = cmd
}

var extraMu sync.Mutex

// trackPid records a process (a Vault Agent, a raft Vault) that the watchdog must stop if this
// process dies; failing to record it fails the test, as the process could outlive the run.
func trackPid(t testing.TB, pid int) {
	t.Helper()
	extraMu.Lock()
	defer extraMu.Unlock()
	path := filepath.Join(env.stateDir, "extra.pids")
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		t.Errorf("recording pid %d for the watchdog: %v", pid, err)
		return
	}
	_, werr := fmt.Fprintln(f, pid)
	if cerr := f.Close(); werr == nil {
		werr = cerr
	}
	if werr != nil {
		t.Errorf("recording pid %d in %s: %v", pid, path, werr)
	}
}

func killExtraPids() {
	extraMu.Lock()
	defer extraMu.Unlock()
	b, err := os.ReadFile(filepath.Join(env.stateDir, "extra.pids"))
	if err != nil {
		return
	}
	for _, l := range strings.Fields(string(b)) {
		if pid, err := strconv.Atoi(l); err == nil {
			_ = syscall.Kill(pid, syscall.SIGTERM)
		}
	}
	_ = os.Remove(filepath.Join(env.stateDir, "extra.pids"))
}

// ensurePlugin builds bin/vault-plugin-secrets-oauth with `make build` when it is missing or older
// than a Go source file of the plugin.
func ensurePlugin() error {
	bin := filepath.Join(env.root, "bin", pluginCmd)
	if os.Getenv("E2E_NO_BUILD") == "1" {
		if _, err := os.Stat(bin); err != nil {
			return fmt.Errorf("%s is missing and E2E_NO_BUILD=1: run 'make build'", bin)
		}
		return nil
	}
	st, err := os.Stat(bin)
	stale := err != nil
	if !stale {
		stale = newerSource(st.ModTime())
	}
	if !stale {
		return nil
	}
	fmt.Fprintf(os.Stderr, "e2e: building the plugin (make build)\n")
	cmd := exec.Command("make", "build")
	cmd.Dir = env.root
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("make build failed: %v\n%s", err, out)
	}
	return nil
}

func newerSource(than time.Time) bool {
	newer := false
	_ = filepath.WalkDir(env.root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || newer {
			return filepath.SkipDir
		}
		if d.IsDir() {
			switch d.Name() {
			case ".git", ".e2e", "e2e", "test", "node_modules", "bin", "scripts":
				return filepath.SkipDir
			}
			return nil
		}
		if strings.HasSuffix(p, ".go") || d.Name() == "go.mod" || d.Name() == "go.sum" {
			if info, err := d.Info(); err == nil && info.ModTime().After(than) {
				newer = true
			}
		}
		return nil
	})
	return newer
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

// runScript runs a repo script; stderr is passed through, stdout returned.
func runScript(script string, args ...string) (string, error) {
	cmd := exec.Command(filepath.Join(env.root, script), args...)
	cmd.Dir = env.root
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
	seen := map[string]bool{}
	for _, pat := range patterns {
		files, _ := filepath.Glob(filepath.Join(env.stateDir, pat))
		for _, f := range files {
			if seen[f] {
				continue
			}
			seen[f] = true
			data, err := os.ReadFile(f)
			if err != nil {
				continue
			}
			fmt.Fprintf(&b, "\n--- last lines of %s ---\n%s", f, tail(string(data), 60))
		}
	}
	return b.String()
}

func readEnvFile(path string) (map[string]string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	vars := map[string]string{}
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(strings.TrimSpace(line), "="); ok {
			vars[strings.TrimPrefix(k, "export ")] = v
		}
	}
	if vars["VAULT_ADDR"] == "" || vars["VAULT_TOKEN"] == "" {
		return nil, fmt.Errorf("%s lacks VAULT_ADDR or VAULT_TOKEN", path)
	}
	return vars, nil
}

func fetchDiscovery(issuer string) (discovery, error) {
	var d discovery
	var lastErr error
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		for _, wk := range []string{"/.well-known/openid-configuration", "/.well-known/oauth-authorization-server"} {
			resp, err := http.Get(issuer + wk)
			if err != nil {
				lastErr = err
				continue
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				lastErr = fmt.Errorf("GET %s: %s: %s", wk, resp.Status, body)
				continue
			}
			if err := json.Unmarshal(body, &d); err != nil {
				return d, fmt.Errorf("GET %s: %w", wk, err)
			}
			if d.TokenEndpoint == "" || d.RegistrationEndpoint == "" || d.IntrospectionEndpoint == "" {
				return d, fmt.Errorf("GET %s: token, registration or introspection endpoint missing: %s", wk, body)
			}
			return d, nil
		}
		time.Sleep(200 * time.Millisecond)
	}
	return d, lastErr
}

func mountNames(m map[string]*api.MountOutput) []string {
	var names []string
	for k, v := range m {
		names = append(names, k+"("+v.Type+")")
	}
	return names
}
