//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/oauth-broker/vault-plugin-secrets-oauth/internal/e2eharness"
)

// ---- the OAuth provider ----

// registerClient registers a client at the provider (e2eharness.Suite.RegisterClient) and
// remembers its secret for the leak scan.
func registerClient(t testing.TB, metadata map[string]any) (id, secret string) {
	t.Helper()
	id, secret = env.RegisterClient(t, metadata)
	rememberSecret(kindClientSecret, secret)
	return id, secret
}

// providerPost sends a form to a provider endpoint as the fixed client "introspector".
func providerPost(t testing.TB, endpoint string, form url.Values) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, endpoint, strings.NewReader(form.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
	rememberSecret(kindClientSecret, "introspector-secret")
	req.SetBasicAuth("introspector", "introspector-secret")
	resp, err := httpClient.Do(req)
	if err != nil {
		t.Fatalf("POST %s: %v", endpoint, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, raw
}

// introspect asks the provider about a token (RFC 7662) as the client "introspector".
func introspect(t testing.TB, token string) map[string]any {
	t.Helper()
	code, raw := providerPost(t, env.Discovery.IntrospectionEndpoint, url.Values{"token": {token}})
	if code != http.StatusOK {
		t.Fatalf("introspection: HTTP %d: %s", code, raw)
	}
	out := map[string]any{}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	if err := dec.Decode(&out); err != nil {
		t.Fatalf("introspection: %v: %s", err, raw)
	}
	return out
}

// ---- Vault ----

// vaultWrite writes data to path. It returns the response (nil without a body), the HTTP status
// (200/204 on success, the *api.ResponseError's status otherwise) and the joined error messages.
// A failure that is not an HTTP answer fails the test.
func vaultWrite(t testing.TB, c *api.Client, path string, data map[string]any) (*api.Secret, int, string) {
	t.Helper()
	body, err := json.Marshal(data)
	if err != nil {
		t.Fatal(err)
	}
	// Not Logical().WriteRawWithContext: it cancels its context on return, which breaks reading
	// an answer larger than what the transport has buffered (a key with its certificates).
	r := c.NewRequest(http.MethodPut, "/v1/"+path)
	r.BodyBytes = body
	//nolint:staticcheck // RawRequestWithContext is the one call that returns the status of any answer.
	resp, err := c.RawRequestWithContext(context.Background(), r)
	return parseResponse(t, "write "+path, resp, err)
}

// vaultRead reads path (params become query parameters), returning like vaultWrite; a 404 is
// returned as such, with its error messages.
func vaultRead(t testing.TB, c *api.Client, path string, params map[string][]string) (*api.Secret, int, string) {
	t.Helper()
	resp, err := c.Logical().ReadRawWithDataWithContext(context.Background(), path, params)
	return parseResponse(t, "read "+path, resp, err)
}

// vaultDelete deletes path, returning like vaultWrite.
func vaultDelete(t testing.TB, c *api.Client, path string) (int, string) {
	t.Helper()
	r := c.NewRequest(http.MethodDelete, "/v1/"+path)
	//nolint:staticcheck // RawRequestWithContext is the one call that returns the status of any answer.
	resp, err := c.RawRequestWithContext(context.Background(), r)
	_, code, msg := parseResponse(t, "delete "+path, resp, err)
	return code, msg
}

// vaultList lists path, returning the keys (nil when there are none).
func vaultList(t testing.TB, c *api.Client, path string) []string {
	t.Helper()
	s, err := c.Logical().List(path)
	if err != nil {
		t.Fatalf("list %s: %v", path, err)
	}
	recordResponse("list "+path, s)
	if s == nil {
		return nil
	}
	raw, _ := s.Data["keys"].([]any)
	keys := make([]string, 0, len(raw))
	for _, k := range raw {
		keys = append(keys, fmt.Sprint(k))
	}
	return keys
}

func parseResponse(t testing.TB, what string, resp *api.Response, err error) (*api.Secret, int, string) {
	t.Helper()
	if resp != nil && resp.Body != nil {
		defer resp.Body.Close()
	}
	var rerr *api.ResponseError
	if err != nil {
		if errors.As(err, &rerr) {
			msg := strings.Join(rerr.Errors, "; ")
			recordText("error of "+what, msg)
			return nil, rerr.StatusCode, msg
		}
		t.Fatalf("%s: %v", what, err)
	}
	if resp == nil {
		t.Fatalf("%s: no response", what)
	}
	secret, perr := api.ParseSecret(resp.Body)
	if perr != nil && !errors.Is(perr, io.EOF) {
		t.Fatalf("%s: parsing the answer: %v", what, perr)
	}
	recordResponse(what, secret)
	return secret, resp.StatusCode, ""
}

// mustWrite writes and fails the test unless Vault accepted it.
func mustWrite(t testing.TB, c *api.Client, path string, data map[string]any) *api.Secret {
	t.Helper()
	s, code, msg := vaultWrite(t, c, path, data)
	if code/100 != 2 {
		t.Fatalf("write %s: HTTP %d: %s", path, code, msg)
	}
	return s
}

// mustRead reads and fails the test unless Vault answered 200 with data.
func mustRead(t testing.TB, c *api.Client, path string) *api.Secret {
	t.Helper()
	s, code, msg := vaultRead(t, c, path, nil)
	if code != http.StatusOK || s == nil {
		t.Fatalf("read %s: HTTP %d: %s", path, code, msg)
	}
	return s
}

// newMount mounts the oauth plugin at a fresh path (prefix-<random>) and unmounts it when the test
// ends. It returns the path without slashes.
func newMount(t testing.TB, prefix string) string {
	t.Helper()
	path := prefix + "-" + randSuffix()
	if err := env.client.Sys().Mount(path, &api.MountInput{Type: "oauth"}); err != nil {
		t.Fatalf("mounting the plugin at %s: %v", path, err)
	}
	t.Cleanup(func() {
		if err := env.client.Sys().Unmount(path); err != nil {
			t.Errorf("unmounting %s: %v", path, err)
		}
	})
	return path
}

// newClientWithPolicy writes the policy, creates a token that has only it (and "default") and
// returns a client using that token. The policy and token are removed when the test ends.
func newClientWithPolicy(t testing.TB, policyName, hcl string) *api.Client {
	t.Helper()
	if err := env.client.Sys().PutPolicy(policyName, hcl); err != nil {
		t.Fatalf("writing policy %s: %v", policyName, err)
	}
	tok, err := env.client.Auth().Token().Create(&api.TokenCreateRequest{
		Policies:    []string{policyName},
		TTL:         "1h",
		DisplayName: "e2e-" + policyName,
	})
	if err != nil {
		t.Fatalf("creating a token with policy %s: %v", policyName, err)
	}
	c, err := env.client.Clone()
	if err != nil {
		t.Fatal(err)
	}
	c.SetToken(tok.Auth.ClientToken)
	t.Cleanup(func() {
		_ = env.client.Auth().Token().RevokeTree(tok.Auth.ClientToken)
		_ = env.client.Sys().DeletePolicy(policyName)
	})
	return c
}

var agentSeq atomic.Int32

// runAgent runs `vault agent` (the server's binary) with one template and returns the path of the
// rendered file once the agent has written it, and a stop function (also run when the test ends).
// The agent authenticates with a token file holding a token whose policy may read */creds/*.
func runAgent(t testing.TB, templateText string) (renderedPath string, stop func()) {
	t.Helper()
	n := agentSeq.Add(1)
	dir := filepath.Join(env.StateDir, fmt.Sprintf("agent-%d", n))
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	policy := fmt.Sprintf("e2e-agent-%d", n)
	agentClient := newClientWithPolicy(t, policy, `path "+/creds/*" { capabilities = ["read"] }`)

	tokenFile := filepath.Join(dir, "token")
	tmplFile := filepath.Join(dir, "template.ctmpl")
	renderedPath = filepath.Join(dir, "rendered")
	cfgFile := filepath.Join(dir, "agent.hcl")
	logFile := filepath.Join(dir, "agent.log")
	must(t, os.WriteFile(tokenFile, []byte(agentClient.Token()), 0o600))
	must(t, os.WriteFile(tmplFile, []byte(templateText), 0o600))
	cfg := fmt.Sprintf(`
pid_file = %q
vault {
  address = %q
  retry { num_retries = 2 }
}
auto_auth {
  method "token_file" {
    config = {
      token_file_path = %q
    }
  }
}
template_config {
  exit_on_retry_failure = true
}
template {
  source      = %q
  destination = %q
  perms       = "0600"
}
`, filepath.Join(dir, "agent.pid"), env.vaultAddr, tokenFile, tmplFile, renderedPath)
	must(t, os.WriteFile(cfgFile, []byte(cfg), 0o600))

	lf, err := os.Create(logFile)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(env.VaultBin, "agent", "-config="+cfgFile, "-log-level=debug")
	cmd.Env = append(e2eharness.CleanEnv(), "HOME="+dir)
	cmd.Stdout, cmd.Stderr = lf, lf
	if err := cmd.Start(); err != nil {
		if cerr := lf.Close(); cerr != nil {
			t.Errorf("closing %s: %v", logFile, cerr)
		}
		t.Fatalf("starting vault agent: %v", err)
	}
	env.TrackPid(t, cmd.Process.Pid)
	// exited carries how the agent ended; closing its log (which the agent wrote through our
	// descriptor) failing is an error too.
	exited := make(chan error, 1)
	go func() {
		err := cmd.Wait()
		if cerr := lf.Close(); cerr != nil && err == nil {
			err = fmt.Errorf("closing %s: %w", logFile, cerr)
		}
		exited <- err
	}()

	var once sync.Once
	stop = func() {
		once.Do(func() {
			_ = cmd.Process.Signal(os.Interrupt)
			select {
			case err := <-exited:
				if err != nil {
					t.Logf("vault agent ended: %v", err)
				}
			case <-time.After(10 * time.Second):
				_ = cmd.Process.Kill()
				err := <-exited
				t.Errorf("vault agent did not stop within 10s of an interrupt and was killed (%v)%s", err, e2eharness.FileTail(logFile, 20))
			}
		})
	}
	t.Cleanup(stop)

	deadline := time.After(60 * time.Second)
	for {
		if b, err := os.ReadFile(renderedPath); err == nil && len(b) > 0 {
			return renderedPath, stop
		}
		select {
		case err := <-exited:
			exited <- err
			t.Fatalf("vault agent exited before rendering (%v)%s", err, e2eharness.FileTail(logFile, 40))
		case <-deadline:
			t.Fatalf("vault agent did not render %s within 60s%s", renderedPath, e2eharness.FileTail(logFile, 40))
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Shorthands for the shared helpers the tests use everywhere.
var (
	must       = e2eharness.Must
	str        = e2eharness.Str
	randSuffix = e2eharness.RandSuffix
	httpClient = e2eharness.HTTPClient
)

// ---- small value helpers ----

// num reads a JSON number (json.Number, float64, int or numeric string) as int64.
func num(t testing.TB, v any, what string) int64 {
	t.Helper()
	switch x := v.(type) {
	case json.Number:
		if i, err := x.Int64(); err == nil {
			return i
		}
		f, err := x.Float64()
		if err != nil {
			t.Fatalf("%s: %q is not a number", what, x)
		}
		return int64(f)
	case float64:
		return int64(x)
	case int:
		return int64(x)
	case int64:
		return x
	case string:
		i, err := json.Number(x).Int64()
		if err != nil {
			t.Fatalf("%s: %q is not a number", what, x)
		}
		return i
	default:
		t.Fatalf("%s: %v (%T) is not a number", what, v, v)
		return 0
	}
}

func abs(x int64) int64 {
	if x < 0 {
		return -x
	}
	return x
}
