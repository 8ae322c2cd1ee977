package oauth

import (
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
)

func readStatus(t testing.TB, b *backend, s logical.Storage, role string) map[string]any {
	t.Helper()
	return mustSucceed(t, request(t, b, s, logical.ReadOperation, "roles/"+role+"/status", nil)).Data
}

func TestStatusReportsTokenAndSchedule(t *testing.T) {
	e := newRefreshEnv(t, 2)
	e.addRole(t, "app", map[string]any{"default_ttl": "1h"})

	status := readStatus(t, e.b, e.s, "app")
	if status["expires_at"] != "" || status["last_refresh"] != "" || status["grants"] != int64(0) {
		t.Fatalf("before any grant: %v", status)
	}
	if status["next_refresh"] != rfc3339(e.clock.Now()) {
		t.Fatalf("a role without a token is refreshed at the next tick, next_refresh = %v", status["next_refresh"])
	}

	creds := readCreds(t, e.b, e.s, "app", nil)
	e.clock.Advance(10 * time.Minute)
	status = readStatus(t, e.b, e.s, "app")
	tok := e.token(t, "app")
	plan := planRefresh("app", tok, refreshPolicy{RefreshFraction: 0.5})
	want := map[string]any{
		"expires_at":                creds.Data["expires_at"],
		"expires_in":                int64(50 * 60),
		"last_refresh":              rfc3339(tok.ObtainedAt),
		"next_refresh":              rfc3339(plan.at),
		"last_error":                "",
		"last_error_at":             "",
		"consecutive_failures":      0,
		"grants":                    int64(1),
		"failures":                  int64(0),
		"client_secret_promoted_at": "",
	}
	for k, v := range want {
		if status[k] != v {
			t.Errorf("%s = %#v, want %#v", k, status[k], v)
		}
	}
	if len(status) != len(want) {
		t.Errorf("status has fields %v, want exactly %v", slices.Sorted(maps.Keys(status)), slices.Sorted(maps.Keys(want)))
	}
	next, _ := time.Parse(time.RFC3339, status["next_refresh"].(string))
	if left := tok.ExpiresAt.Sub(next); left <= 30*time.Minute {
		t.Fatalf("next_refresh leaves %s, not more than the 30m threshold", left)
	}
	for _, v := range status {
		if s, ok := v.(string); ok && s != "" && strings.Contains(s, tok.AccessToken) {
			t.Fatal("status shows the access token")
		}
	}
}

func TestStatusReportsFailureWithoutSecrets(t *testing.T) {
	e := newRefreshEnv(t, 2)
	const wrong = "wrong-role-secret-value-0123456789"
	e.addRole(t, "app", map[string]any{"client_secret": wrong})
	e.tick(t)

	status := readStatus(t, e.b, e.s, "app")
	msg := status["last_error"].(string)
	if !strings.Contains(msg, "invalid_client") {
		t.Fatalf("last_error should name the provider's error: %q", msg)
	}
	for _, secret := range []string{wrong, testClientSecret} {
		if strings.Contains(msg, secret) {
			t.Fatalf("last_error leaks a secret: %q", msg)
		}
	}
	if status["consecutive_failures"] != 1 || status["failures"] != int64(1) || status["grants"] != int64(0) {
		t.Fatalf("counts after one failure: %v", status)
	}
	if status["last_error_at"] != rfc3339(e.clock.Now()) || status["next_refresh"].(string) <= rfc3339(e.clock.Now()) {
		t.Fatalf("a failure is retried later: last_error_at %v, next_refresh %v", status["last_error_at"], status["next_refresh"])
	}
}

func TestStatusErrors(t *testing.T) {
	p := newProviderWithClient(t)
	b, s := configured(t, p)
	mustFailNaming(t, request(t, b, s, logical.ReadOperation, "roles/missing/status", nil), `role "missing" does not exist`)
	mustFailNaming(t, request(t, b, s, logical.ReadOperation, "roles/-bad-/status", nil), "name")
	mustFailNaming(t, request(t, b, s, logical.ReadOperation, "roles/app/status", map[string]any{"verbose": true}), "verbose")
}
