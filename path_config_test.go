package oauth

import (
	"reflect"
	"strings"
	"testing"

	"github.com/hashicorp/vault/sdk/logical"
)

func TestConfigWriteReadHidesSecrets(t *testing.T) {
	p := newProviderWithClient(t)
	b, s := newTestBackend(t)
	mustSucceed(t, request(t, b, s, logical.UpdateOperation, "config", map[string]any{
		"issuer": p.URL, "client_id": testClientID, "client_secret": testClientSecret, "timeout": "10s",
	}))
	data := request(t, b, s, logical.ReadOperation, "config", nil).Data
	if data["client_secret_set"] != true || data["timeout"] != int64(10) || data["token_url"] != p.TokenURL() {
		t.Fatalf("unexpected config read: %v", data)
	}
	for k, v := range data {
		if strings.Contains(strings.ToLower(k), "secret") && !strings.HasSuffix(k, "_set") && !strings.HasSuffix(k, "_promoted_at") {
			t.Fatalf("config read exposes %s", k)
		}
		if s, ok := v.(string); ok && strings.Contains(s, testClientSecret) {
			t.Fatalf("config read leaks the client secret in %s", k)
		}
	}
}

func TestConfigUpdateKeepsUnsetFields(t *testing.T) {
	p := newProviderWithClient(t)
	b, s := configured(t, p)
	mustSucceed(t, request(t, b, s, logical.UpdateOperation, "config", map[string]any{"timeout": 5}))
	data := request(t, b, s, logical.ReadOperation, "config", nil).Data
	if data["client_id"] != testClientID || data["client_secret_set"] != true || data["token_url"] != p.TokenURL() {
		t.Fatalf("a partial update lost fields: %v", data)
	}
	readCreds(t, b, s, "app", nil) // the stored secret still works
}

func TestConfigRejectsBadInputAndStoresNothing(t *testing.T) {
	cases := map[string]struct {
		data  map[string]any
		field string
	}{
		"neither issuer nor token_url": {map[string]any{"client_id": "x"}, "issuer"},
		"ftp scheme":                   {map[string]any{"token_url": "ftp://idp.example.com/token"}, "token_url"},
		"http to a remote host":        {map[string]any{"token_url": "http://idp.example.com/token"}, "token_url"},
		"relative URL":                 {map[string]any{"token_url": "/token"}, "token_url"},
		"credentials in URL":           {map[string]any{"token_url": "https://u:p@idp.example.com/token"}, "token_url"},
		"zero timeout":                 {map[string]any{"token_url": "https://idp.example.com/token", "timeout": 0}, "timeout"},
		"bad auth_method":              {map[string]any{"token_url": "https://idp.example.com/token", "auth_method": "magic"}, "auth_method"},
		"bad ca_pem":                   {map[string]any{"token_url": "https://idp.example.com/token", "ca_pem": "not a cert"}, "ca_pem"},
		"refresh_fraction too high":    {map[string]any{"token_url": "https://idp.example.com/token", "refresh_fraction": 0.95}, "refresh_fraction"},
		"unknown field":                {map[string]any{"token_url": "https://idp.example.com/token", "tokne_url": "x"}, "tokne_url"},
		"issuer without discovery":     {map[string]any{"issuer": "http://127.0.0.1:1"}, "issuer"},
		"max_concurrent_refreshes 0":   {map[string]any{"token_url": "https://idp.example.com/token", "max_concurrent_refreshes": 0}, "max_concurrent_refreshes"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			b, s := newTestBackend(t)
			mustFailNaming(t, request(t, b, s, logical.UpdateOperation, "config", tc.data), tc.field)
			if snap := s.snapshot(t); len(snap) != 0 {
				t.Fatalf("a rejected write stored %v", snap)
			}
		})
	}
}

func TestConfigRejectedUpdateLeavesStoredConfig(t *testing.T) {
	p := newProviderWithClient(t)
	b, s := configured(t, p)
	before := s.snapshot(t)
	mustFailNaming(t, request(t, b, s, logical.UpdateOperation, "config", map[string]any{"token_url": "http://idp.example.com/token"}), "token_url")
	if after := s.snapshot(t); !reflect.DeepEqual(before, after) {
		t.Fatal("a rejected update changed storage")
	}
	readCreds(t, b, s, "app", nil)
}

func TestConfigDelete(t *testing.T) {
	p := newProviderWithClient(t)
	b, s := configured(t, p)
	mustSucceed(t, request(t, b, s, logical.DeleteOperation, "config", nil))
	if resp := request(t, b, s, logical.ReadOperation, "config", nil); resp != nil {
		t.Fatalf("config still readable after delete: %v", resp.Data)
	}
}
