package oauth

import (
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
	for _, path := range []string{"config", "roles/", "roles/app", "creds/app", "roles/app/status", "rotate/app", "keys/", "keys/k", "keys/k/rotate", "jwks", "config/promote-secret", "roles/app/promote-secret"} {
		resp := request(t, b, s, logical.HelpOperation, path, nil)
		if help, _ := resp.Data["help"].(string); help == "" {
			t.Errorf("vault path-help %s is empty", path)
		}
	}
}

func TestStorageIsSealWrapped(t *testing.T) {
	b, _ := newTestBackend(t)
	wrapped := b.SpecialPaths().SealWrapStorage
	for _, key := range []string{configPath, rolePrefix, tokenPrefix, keyPrefix} {
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
	check(logical.UpdateOperation, "keys/k", map[string]any{"alg": "ES256"})
	check(logical.ReadOperation, "keys/k", nil)
	check(logical.ListOperation, "keys/", nil)
	check(logical.UpdateOperation, "keys/k/rotate", nil)
	check(logical.DeleteOperation, "keys/k", nil)
	check(logical.UpdateOperation, "roles/app", map[string]any{"client_secret": testClientSecret, "client_secret_next": "next-secret"})
	check(logical.UpdateOperation, "roles/app/promote-secret", nil)
	check(logical.UpdateOperation, "config", map[string]any{"client_secret_next": "next-secret"})
	check(logical.UpdateOperation, "config/promote-secret", nil)
	check(logical.DeleteOperation, "roles/app", nil)
	check(logical.DeleteOperation, "config", nil)
}
