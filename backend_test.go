package oauth

import (
	"testing"

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
	for _, path := range []string{"config", "roles/", "roles/app", "creds/app"} {
		resp := request(t, b, s, logical.HelpOperation, path, nil)
		if help, _ := resp.Data["help"].(string); help == "" {
			t.Errorf("vault path-help %s is empty", path)
		}
	}
}

func TestStorageIsSealWrapped(t *testing.T) {
	b, _ := newTestBackend(t)
	wrapped := b.SpecialPaths().SealWrapStorage
	for _, key := range []string{configPath, rolePrefix, tokenPrefix} {
		found := false
		for _, w := range wrapped {
			found = found || w == key
		}
		if !found {
			t.Errorf("%s is not seal-wrapped", key)
		}
	}
}
