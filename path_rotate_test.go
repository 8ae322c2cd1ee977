package oauth

import (
	"net/http"
	"strings"
	"testing"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"
)

func rotate(t testing.TB, b *backend, s logical.Storage, role string) *logical.Response {
	t.Helper()
	return mustSucceed(t, request(t, b, s, logical.UpdateOperation, "rotate/"+role, nil))
}

func TestRotateReplacesAndRevokesOldToken(t *testing.T) {
	e := newRefreshEnv(t, 2)
	e.addRole(t, "app", map[string]any{"default_ttl": "1h"})
	old := readCreds(t, e.b, e.s, "app", nil).Data["access_token"].(string)

	resp := rotate(t, e.b, e.s, "app")
	if len(resp.Warnings) != 0 || resp.Data["previous_token_revoked"] != true {
		t.Fatalf("rotate: revoked %v, warnings %v", resp.Data["previous_token_revoked"], resp.Warnings)
	}
	if resp.Data["grants"] != int64(2) || resp.Data["expires_at"] == "" {
		t.Fatalf("rotate should answer with the new status: %v", resp.Data)
	}
	if _, ok := resp.Data["access_token"]; ok {
		t.Fatal("rotate must not return the token; creds does")
	}
	fresh := readCreds(t, e.b, e.s, "app", nil).Data["access_token"].(string)
	if fresh == old {
		t.Fatal("creds still serves the rotated token")
	}
	if _, active := e.p.Introspect(old); active {
		t.Fatal("the old token is still active at the provider")
	}
	if _, active := e.p.Introspect(fresh); !active {
		t.Fatal("the new token is not active")
	}
}

func TestRotateWithoutRevocationEndpointKeepsOldTokenActive(t *testing.T) {
	p := newProviderWithClient(t)
	b, s := configured(t, p)
	old := readCreds(t, b, s, "app", nil).Data["access_token"].(string)
	resp := rotate(t, b, s, "app")
	if resp.Data["previous_token_revoked"] != false || len(resp.Warnings) != 0 {
		t.Fatalf("without a revocation endpoint nothing is revoked: %v %v", resp.Data, resp.Warnings)
	}
	if _, active := p.Introspect(old); !active {
		t.Fatal("the old token was revoked without a revocation endpoint")
	}
	if readCreds(t, b, s, "app", nil).Data["access_token"] == old {
		t.Fatal("creds still serves the rotated token")
	}
}

func TestRotateRevocationFailureIsAWarning(t *testing.T) {
	e := newRefreshEnv(t, 2)
	mustSucceed(t, request(t, e.b, e.s, logical.UpdateOperation, "config", map[string]any{"revocation_url": e.p.URL + "/no-such-endpoint"}))
	e.addRole(t, "app", map[string]any{"default_ttl": "1h"})
	old := readCreds(t, e.b, e.s, "app", nil).Data["access_token"].(string)

	resp := rotate(t, e.b, e.s, "app")
	if resp.Data["previous_token_revoked"] != false || len(resp.Warnings) != 1 || !strings.Contains(resp.Warnings[0], "HTTP 404") {
		t.Fatalf("a failed revocation should be one warning naming the status: %v", resp.Warnings)
	}
	for _, secret := range []string{old, testClientSecret} {
		if strings.Contains(resp.Warnings[0], secret) {
			t.Fatalf("warning leaks a secret: %q", resp.Warnings[0])
		}
	}
	if readCreds(t, e.b, e.s, "app", nil).Data["access_token"] == old {
		t.Fatal("the new token must be stored even when revocation fails")
	}
}

func TestFailedRotateKeepsOldToken(t *testing.T) {
	e := newRefreshEnv(t, 2)
	e.addRole(t, "app", map[string]any{"default_ttl": "1h"})
	old := readCreds(t, e.b, e.s, "app", nil).Data["access_token"].(string)
	requests := e.p.Requests()
	e.failWith(http.StatusServiceUnavailable, nil)

	resp, err := requestErr(e.b, e.s, logical.UpdateOperation, "rotate/app", nil)
	if err == nil && !resp.IsError() {
		t.Fatal("a failed rotate must report an error")
	}
	msg := ""
	if err != nil {
		msg = err.Error()
	} else {
		msg = resp.Error().Error()
	}
	if !strings.Contains(msg, "HTTP 503") || !strings.Contains(msg, "still served") {
		t.Fatalf("error should name the failure and say the old token is kept: %q", msg)
	}
	if e.p.Requests() != requests+1 {
		t.Fatalf("rotate sent %d token requests, want 1", e.p.Requests()-requests)
	}
	if _, active := e.p.Introspect(old); !active {
		t.Fatal("a failed rotate revoked the old token")
	}
	e.failWith(0, nil)
	if readCreds(t, e.b, e.s, "app", nil).Data["access_token"] != old {
		t.Fatal("a failed rotate discarded the still-valid token")
	}
	if status := readStatus(t, e.b, e.s, "app"); status["consecutive_failures"] != 1 {
		t.Fatalf("the failure should be recorded: %v", status)
	}
}

func TestRotateErrors(t *testing.T) {
	p := newProviderWithClient(t)
	b, s := configured(t, p)
	mustFailNaming(t, request(t, b, s, logical.UpdateOperation, "rotate/missing", nil), `role "missing" does not exist`)
	mustFailNaming(t, request(t, b, s, logical.UpdateOperation, "rotate/bad..", nil), "name")
	mustFailNaming(t, request(t, b, s, logical.UpdateOperation, "rotate/app", map[string]any{"force": true}), "force")

	unconfigured, s2 := newTestBackend(t)
	mustSucceed(t, request(t, unconfigured, s2, logical.UpdateOperation, "roles/app", nil))
	mustFailNaming(t, request(t, unconfigured, s2, logical.UpdateOperation, "rotate/app", nil), "oauth/config")
	if p.Requests() != 0 {
		t.Fatal("rejected rotations called the provider")
	}
}

func TestRotateIsForwardedToTheActiveNode(t *testing.T) {
	b, _ := newTestBackend(t)
	for _, p := range b.Paths {
		if !strings.HasPrefix(p.Pattern, "rotate/") {
			continue
		}
		op := p.Operations[logical.UpdateOperation].(*framework.PathOperation)
		if !op.ForwardPerformanceStandby || !op.ForwardPerformanceSecondary {
			t.Fatal("rotate calls the provider and writes storage: it must be forwarded")
		}
		return
	}
	t.Fatal("no rotate path")
}
