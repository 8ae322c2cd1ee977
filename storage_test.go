package oauth

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hashicorp/vault/sdk/logical"
)

// loadFixtures puts the storage entries under dir into s, as a release left them.
func loadFixtures(t *testing.T, s logical.Storage, dir string) map[string]map[string]any {
	t.Helper()
	entries := map[string]map[string]any{}
	err := filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		buf, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		key := strings.TrimSuffix(filepath.ToSlash(strings.TrimPrefix(path, dir+string(filepath.Separator))), ".json")
		var v map[string]any
		if err := json.Unmarshal(buf, &v); err != nil {
			return err
		}
		entries[key] = v
		return s.Put(context.Background(), &logical.StorageEntry{Key: key, Value: buf})
	})
	if err != nil {
		t.Fatal(err)
	}
	return entries
}

// What v0.1.0 stored keeps working: its cached tokens are served, its rotated refresh token is
// the one the next grant uses, and entries written now record their format.
func TestEntriesOfV010StillServe(t *testing.T) {
	b, s := newTestBackend(t)
	old := loadFixtures(t, s, filepath.Join("testdata", "storage-v0.1.0"))

	for _, role := range []string{"app", "chain"} {
		resp := readCreds(t, b, s, role, nil)
		if resp.Data["access_token"] != old["tokens/"+role]["access_token"] {
			t.Fatalf("%s: the cached token of v0.1.0 was not served", role)
		}
	}
	if got := mustSucceed(t, request(t, b, s, logical.ReadOperation, "roles/chain", nil)).Data["refresh_fraction"]; got != 0.3 {
		t.Fatalf("the role's settings did not survive: refresh_fraction %v", got)
	}

	// The provider moved (the fixture's is gone); the rotated refresh token is accepted by it.
	p := newProviderWithClient(t)
	chain := old["tokens/chain"]["refresh_token"].(string)
	p.AcceptRefreshToken(chain, testClientID, "bob", "read")
	mustSucceed(t, request(t, b, s, logical.UpdateOperation, "config", map[string]any{"token_url": p.TokenURL()}))
	rotate(t, b, s, "chain")
	resp := readCreds(t, b, s, "chain", nil)
	if _, active := p.Introspect(resp.Data["access_token"].(string)); !active || p.RefreshTokenValid(chain) {
		t.Fatal("the next grant should have used the refresh token v0.1.0 stored")
	}
	if tok := storedToken(t, s, "chain"); tok.Format != storageFormat || tok.Binding == "" {
		t.Fatalf("a token written now should record format %d and its binding", storageFormat)
	}
}
