//go:build e2e

package e2eharness

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"
)

// Must fails the test on an error.
func Must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// Str is v as a string: "" for nil, v itself for a string, else fmt.Sprint(v).
func Str(v any) string {
	if v == nil {
		return ""
	}
	if s, ok := v.(string); ok {
		return s
	}
	return fmt.Sprint(v)
}

// RandSuffix is 8 random hex digits, to make names (mounts, roles, policies) unique.
func RandSuffix() string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// CleanEnv is the environment without VAULT_* variables, so that nothing leaks into a child.
func CleanEnv() []string {
	var out []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "VAULT_") {
			out = append(out, kv)
		}
	}
	return out
}

// LastLine is the last non-empty line of s, trimmed.
func LastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return strings.TrimSpace(lines[len(lines)-1])
}

// Tail is the last n lines of s.
func Tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// FileTail renders the last n lines of a file under a heading ("" when it cannot be read).
func FileTail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	return fmt.Sprintf("\n--- last lines of %s ---\n%s", path, Tail(string(b), n))
}

// VaultConfig is the API client configuration of the suites: one connection per request.
// Under the api client, retryablehttp closes the client's idle connections after every failed
// request; parallel tests share the client (and its clones), and with keep-alives one test's
// request can pick a connection just as another's failure closes it ("CloseIdleConnections
// called").
func VaultConfig(addr string, timeout time.Duration) *api.Config {
	cfg := api.DefaultConfig()
	cfg.Address = addr
	cfg.Timeout = timeout
	cfg.HttpClient.Transport.(*http.Transport).DisableKeepAlives = true
	return cfg
}
