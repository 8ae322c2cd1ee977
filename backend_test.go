package oauth

import (
	"net/http"
	"testing"

	"github.com/hashicorp/vault/sdk/helper/testhelpers/schema"
	"github.com/hashicorp/vault/sdk/logical"
)

// Every path answers path-help with its own synopsis.
func TestEveryPathHasHelp(t *testing.T) {
	b, s := newTestBackend(t)
	for _, p := range b.Paths {
		if p.HelpSynopsis == "" || p.HelpDescription == "" {
			t.Errorf("path %s lacks help text", p.Pattern)
		}
	}
	for _, path := range []string{"config", "roles/", "roles/app", "creds/app", "roles/app/status", "rotate/app", "authorize/app", "callback", "device/app"} {
		resp := request(t, b, s, logical.HelpOperation, path, nil)
		if help, _ := resp.Data["help"].(string); help == "" {
			t.Errorf("vault path-help %s is empty", path)
		}
	}
}

func TestStorageIsSealWrapped(t *testing.T) {
	b, _ := newTestBackend(t)
	wrapped := b.SpecialPaths().SealWrapStorage
	for _, key := range []string{configPath, rolePrefix, tokenPrefix, authzPrefix, statePrefix} {
		found := false
		for _, w := range wrapped {
			found = found || w == key
		}
		if !found {
			t.Errorf("%s is not seal-wrapped", key)
		}
	}
}

// Every operation has an OpenAPI summary and documents its answer, and the answers given match
// what is documented, field for field.
func TestOperationsDocumentTheirAnswers(t *testing.T) {
	p := newProviderWithClient(t)
	b, s := configured(t, p)
	for _, path := range b.Paths {
		for op, handler := range path.Operations {
			if props := handler.Properties(); props.Summary == "" || len(props.Responses) == 0 {
				t.Errorf("%s %s lacks a summary or responses", op, path.Pattern)
			}
		}
	}
	check := func(op logical.Operation, path string, data map[string]any) {
		t.Helper()
		resp := mustSucceed(t, request(t, b, s, op, path, data))
		schema.ValidateResponse(t, schema.GetResponseSchema(t, b.Route(path), op), resp, true)
	}
	check(logical.ReadOperation, "config", nil)
	check(logical.ListOperation, "roles/", nil)
	check(logical.ReadOperation, "roles/app", nil)
	check(logical.ReadOperation, "creds/app", nil)
	check(logical.ReadOperation, "roles/app/status", nil)
	check(logical.UpdateOperation, "rotate/app", nil)
	check(logical.UpdateOperation, "roles/app", map[string]any{"scopes": "read", "lease": false})
	check(logical.ReadOperation, "creds/app", nil)
	check(logical.UpdateOperation, "config", map[string]any{"timeout": 10})
	check(logical.DeleteOperation, "roles/app", nil)
	check(logical.DeleteOperation, "config", nil)
}

// The same for the user-delegated grants' paths.
func TestDelegatedOperationsDocumentTheirAnswers(t *testing.T) {
	e := newCodeEnv(t)
	check := func(op logical.Operation, path string, data map[string]any) *logical.Response {
		t.Helper()
		resp := mustSucceed(t, request(t, e.b, e.s, op, path, data))
		schema.ValidateResponse(t, schema.GetResponseSchema(t, e.b.Route(path), op), resp, true)
		return resp
	}
	check(logical.ReadOperation, "roles/app/status", nil)
	authURL := check(logical.UpdateOperation, "authorize/app", nil).Data["auth_url"].(string)
	back := browse(t, authURL)
	check(logical.UpdateOperation, "callback", map[string]any{"code": back.Get("code"), "state": back.Get("state")})
	check(logical.ReadOperation, "roles/app/status", nil)
	check(logical.ReadOperation, "roles/app", nil)
	authURL = check(logical.UpdateOperation, "authorize/app", nil).Data["auth_url"].(string)
	back = browse(t, authURL)
	if status, _ := e.callback(t, back); status != http.StatusOK {
		t.Fatalf("the browser's callback answered %d", status)
	}

	mustSucceed(t, request(t, e.b, e.s, logical.UpdateOperation, "roles/dev", map[string]any{"grant_type": "device_code"}))
	check(logical.UpdateOperation, "device/dev", nil)
	check(logical.ReadOperation, "roles/dev/status", nil)
}

// The browser's callback needs no Vault token.
func TestCallbackIsUnauthenticated(t *testing.T) {
	b, _ := newTestBackend(t)
	if got := b.SpecialPaths().Unauthenticated; len(got) != 1 || got[0] != "callback" {
		t.Fatalf("unauthenticated paths: %v", got)
	}
}
