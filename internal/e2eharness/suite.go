//go:build e2e

// Package e2eharness is what the end-to-end suites (e2e and e2e/cluster) share: the state dir,
// the repository scripts that start and stop the servers, the watchdog that stops them when the
// test process dies, the test OAuth provider (scripts/provider.sh) and small helpers.
//
// It is compiled only with the e2e build tag, like the suites themselves.
package e2eharness

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
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
)

// PluginCmd is the plugin's binary name (bin/PluginCmd, and its command in Vault's catalog).
const PluginCmd = "vault-plugin-secrets-oauth"

// Suite is one suite's servers: where they keep their state, how they are stopped, and the
// provider. Its fields are set in setup and only read by the tests.
type Suite struct {
	// Name prefixes the suite's messages ("e2e", "cluster").
	Name string
	// StopScripts stop the suite's Vault servers, as `<script> stop <state dir>`, at teardown and
	// from the watchdog; the provider is stopped after them.
	StopScripts []string
	// KeptLogs names the logs in the message of a kept state dir.
	KeptLogs string
	// ScriptEnv is added to the environment of every script RunScript runs.
	ScriptEnv []string

	Root        string    // the repository root
	StateDir    string    // the state dir of the provider and the servers
	VaultBin    string    // the Vault binary (scripts/vault-binary.sh)
	ProviderURL string    // the provider's issuer, without a trailing slash
	Discovery   Discovery // the provider's metadata

	teardownOnce sync.Once
	watchdog     *exec.Cmd
	pidsMu       sync.Mutex
}

// Main runs the tests between setup and the teardown, which also runs when setup fails, a test
// panics in the main goroutine or the process is interrupted. afterTests (may be nil) runs after
// the last test, while the servers still run; false fails the run. It returns the exit code.
func (s *Suite) Main(m *testing.M, setup func() error, afterTests func() bool) (code int) {
	code = 1
	if err := setup(); err != nil {
		fmt.Fprintf(os.Stderr, "\n=== %s setup FAILED ===\n%v\n", s.Name, err)
		s.Teardown(false)
		return 1
	}
	defer func() {
		if r := recover(); r != nil {
			fmt.Fprintf(os.Stderr, "%s: panic: %v\n", s.Name, r)
			code = 1
		}
		s.Teardown(code == 0)
	}()

	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	go func() {
		sig := <-sigs
		fmt.Fprintf(os.Stderr, "\n%s: got %v: stopping the servers\n", s.Name, sig)
		s.Teardown(false)
		os.Exit(2)
	}()

	code = m.Run()
	if afterTests != nil && !afterTests() {
		code = 1
	}
	return code
}

// MakeStateDir finds the repository root and creates the state dir: E2E_STATE_DIR, or
// .e2e/<prefix>-<pid> in the repository.
func (s *Suite) MakeStateDir(prefix string) error {
	root, err := RepoRoot()
	if err != nil {
		return err
	}
	s.Root = root
	s.StateDir = os.Getenv("E2E_STATE_DIR")
	if s.StateDir == "" {
		s.StateDir = filepath.Join(root, ".e2e", fmt.Sprintf("%s-%d", prefix, os.Getpid()))
	}
	if s.StateDir, err = filepath.Abs(s.StateDir); err != nil {
		return err
	}
	if err := os.MkdirAll(s.StateDir, 0o700); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "%s: state dir %s\n", s.Name, s.StateDir)
	return nil
}

// StartProvider gets the Vault binary (its first build can take minutes: before any server
// starts), starts the watchdog, then the OAuth provider, and reads its discovery document.
func (s *Suite) StartProvider() error {
	out, err := s.RunScript("scripts/vault-binary.sh")
	if err != nil {
		return fmt.Errorf("getting the Vault binary: %w", err)
	}
	s.VaultBin = LastLine(out)

	s.startWatchdog()

	out, err = s.RunScript("scripts/provider.sh", "start", s.StateDir)
	if err != nil {
		return fmt.Errorf("starting the OAuth provider: %w%s", err, s.LogTails("provider*.log", "*provider*/*.log"))
	}
	s.ProviderURL = strings.TrimRight(LastLine(out), "/")
	if s.ProviderURL == "" {
		if b, rerr := os.ReadFile(filepath.Join(s.StateDir, "provider.url")); rerr == nil {
			s.ProviderURL = strings.TrimRight(strings.TrimSpace(string(b)), "/")
		}
	}
	if !strings.HasPrefix(s.ProviderURL, "http://127.0.0.1:") {
		return fmt.Errorf("provider.sh printed %q, want http://127.0.0.1:PORT%s", s.ProviderURL, s.LogTails("provider*.log"))
	}
	if s.Discovery, err = FetchDiscovery(s.ProviderURL); err != nil {
		return fmt.Errorf("provider discovery: %w%s", err, s.LogTails("provider*.log"))
	}
	return nil
}

// Teardown stops the servers (once); the state dir is removed after a passing run unless
// E2E_KEEP=1 or E2E_STATE_DIR named it.
func (s *Suite) Teardown(passed bool) {
	s.teardownOnce.Do(func() {
		if s.StateDir == "" {
			return
		}
		s.killTrackedPids()
		for _, script := range append(append([]string{}, s.StopScripts...), "scripts/provider.sh") {
			if _, err := s.RunScript(script, "stop", s.StateDir); err != nil {
				fmt.Fprintf(os.Stderr, "%s: stopping the servers: %v\n", s.Name, err)
			}
		}
		if s.watchdog != nil && s.watchdog.Process != nil {
			_ = s.watchdog.Process.Kill()
			_, _ = s.watchdog.Process.Wait()
		}
		if passed && os.Getenv("E2E_KEEP") != "1" && os.Getenv("E2E_STATE_DIR") == "" {
			_ = os.RemoveAll(s.StateDir)
		} else {
			fmt.Fprintf(os.Stderr, "%s: logs kept in %s (%s)\n", s.Name, s.StateDir, s.KeptLogs)
		}
	})
}

// startWatchdog starts a detached shell that stops everything once this test process is gone,
// whatever the reason (panic in a test, -timeout, SIGKILL). A normal teardown kills it first.
func (s *Suite) startWatchdog() {
	script := `
pid="$1" root="$2" state="$3"
shift 3
while kill -0 "$pid" 2>/dev/null; do sleep 0.5; done
if [ -f "$state/extra.pids" ]; then
  while read -r p; do kill -TERM "$p" 2>/dev/null || true; done <"$state/extra.pids"
fi
for s in "$@" scripts/provider.sh; do "$root/$s" stop "$state" || true; done
echo "watchdog: stopped the servers of the dead test process $pid"
`
	args := append([]string{"-c", script, s.Name + "-watchdog", strconv.Itoa(os.Getpid()), s.Root, s.StateDir}, s.StopScripts...)
	cmd := exec.Command("bash", args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	logFile, err := os.OpenFile(filepath.Join(s.StateDir, "watchdog.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: the watchdog logs nowhere: %v\n", s.Name, err)
	} else {
		cmd.Stdout, cmd.Stderr = logFile, logFile
	}
	err = cmd.Start()
	if logFile != nil {
		// The watchdog has a descriptor of its own now (or never started).
		if cerr := logFile.Close(); cerr != nil {
			fmt.Fprintf(os.Stderr, "%s: closing the watchdog's log: %v\n", s.Name, cerr)
		}
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: could not start the watchdog: %v\n", s.Name, err)
		return
	}
	s.watchdog = cmd
}

// TrackPid records a process (a Vault Agent, a raft Vault) that the watchdog must stop if this
// process dies; failing to record it fails the test, as the process could outlive the run.
func (s *Suite) TrackPid(t testing.TB, pid int) {
	t.Helper()
	s.pidsMu.Lock()
	defer s.pidsMu.Unlock()
	path := filepath.Join(s.StateDir, "extra.pids")
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

func (s *Suite) killTrackedPids() {
	s.pidsMu.Lock()
	defer s.pidsMu.Unlock()
	b, err := os.ReadFile(filepath.Join(s.StateDir, "extra.pids"))
	if err != nil {
		return
	}
	for _, l := range strings.Fields(string(b)) {
		if pid, err := strconv.Atoi(l); err == nil {
			_ = syscall.Kill(pid, syscall.SIGTERM)
		}
	}
	_ = os.Remove(filepath.Join(s.StateDir, "extra.pids"))
}

// EnsurePlugin builds bin/vault-plugin-secrets-oauth with `make build` when it is missing or
// older than a Go source file of the plugin; with E2E_NO_BUILD=1 it only checks that it exists.
func (s *Suite) EnsurePlugin() error {
	bin := filepath.Join(s.Root, "bin", PluginCmd)
	if os.Getenv("E2E_NO_BUILD") == "1" {
		if _, err := os.Stat(bin); err != nil {
			return fmt.Errorf("%s is missing and E2E_NO_BUILD=1: run 'make build'", bin)
		}
		return nil
	}
	st, err := os.Stat(bin)
	stale := err != nil
	if !stale {
		stale = newerSource(s.Root, st.ModTime())
	}
	if !stale {
		return nil
	}
	fmt.Fprintf(os.Stderr, "%s: building the plugin (make build)\n", s.Name)
	cmd := exec.Command("make", "build")
	cmd.Dir = s.Root
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("make build failed: %v\n%s", err, out)
	}
	return nil
}

func newerSource(root string, than time.Time) bool {
	newer := false
	_ = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
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

// RunScript runs a repository script (with ScriptEnv); stderr is passed through, stdout returned.
func (s *Suite) RunScript(script string, args ...string) (string, error) {
	cmd := exec.Command(filepath.Join(s.Root, script), args...)
	cmd.Dir = s.Root
	if len(s.ScriptEnv) > 0 {
		cmd.Env = append(os.Environ(), s.ScriptEnv...)
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout = &stdout
	cmd.Stderr = io.MultiWriter(os.Stderr, &stderr)
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("%s %s: %v\n--- stderr ---\n%s", script, strings.Join(args, " "), err, Tail(stderr.String(), 40))
	}
	return stdout.String(), nil
}

// LogTails renders the last lines of the state dir's log files matching the patterns.
func (s *Suite) LogTails(patterns ...string) string {
	var b strings.Builder
	seen := map[string]bool{}
	for _, pat := range patterns {
		files, _ := filepath.Glob(filepath.Join(s.StateDir, pat))
		for _, f := range files {
			if !seen[f] {
				seen[f] = true
				b.WriteString(FileTail(f, 60))
			}
		}
	}
	return b.String()
}

// RepoRoot is the first folder at or above the working directory that holds go.mod.
func RepoRoot() (string, error) {
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

// ReadEnvFile reads the KEY=value lines (an "export " before a key is dropped) of a file a
// script wrote; each of the required keys must have a value.
func ReadEnvFile(path string, required ...string) (map[string]string, error) {
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
	for _, k := range required {
		if vars[k] == "" {
			return nil, fmt.Errorf("%s lacks %s", path, k)
		}
	}
	return vars, nil
}
