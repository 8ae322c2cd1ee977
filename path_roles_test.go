package oauth

import (
	"reflect"
	"strings"
	"testing"

	"github.com/hashicorp/vault/sdk/logical"
)

func TestRoleCRUDAndList(t *testing.T) {
	p := newProviderWithClient(t)
	b, s := configured(t, p)
	mustSucceed(t, request(t, b, s, logical.UpdateOperation, "roles/other", map[string]any{
		"client_secret": "role-secret-value", "audience": "https://api.example.com", "token_params": []string{"a=1", "b=2"},
	}))
	list := request(t, b, s, logical.ListOperation, "roles/", nil).Data["keys"].([]string)
	if !reflect.DeepEqual(list, []string{"app", "other"}) {
		t.Fatalf("list = %v", list)
	}
	data := request(t, b, s, logical.ReadOperation, "roles/other", nil).Data
	if data["grant_type"] != "client_credentials" || data["client_secret_set"] != true || data["audience"] != "https://api.example.com" {
		t.Fatalf("unexpected role read: %v", data)
	}
	if !reflect.DeepEqual(data["token_params"], map[string]string{"a": "1", "b": "2"}) {
		t.Fatalf("token_params = %v", data["token_params"])
	}
	for k, v := range data {
		if s, ok := v.(string); ok && strings.Contains(s, "role-secret-value") {
			t.Fatalf("role read leaks the secret in %s", k)
		}
	}
	mustSucceed(t, request(t, b, s, logical.DeleteOperation, "roles/other", nil))
	if resp := request(t, b, s, logical.ReadOperation, "roles/other", nil); resp != nil {
		t.Fatal("role readable after delete")
	}
}

func TestRoleDeleteRemovesCachedToken(t *testing.T) {
	p := newProviderWithClient(t)
	b, s := configured(t, p)
	readCreds(t, b, s, "app", nil)
	mustSucceed(t, request(t, b, s, logical.DeleteOperation, "roles/app", nil))
	if snap := s.snapshot(t); len(snap) != 1 {
		t.Fatalf("only config should remain, storage has %v keys", len(snap))
	}
	mustFailNaming(t, request(t, b, s, logical.ReadOperation, "creds/app", nil), "does not exist")
}

func TestRoleChangeReplacesCachedToken(t *testing.T) {
	p := newProviderWithClient(t)
	b, s := configured(t, p)
	first := readCreds(t, b, s, "app", nil).Data["access_token"]

	mustSucceed(t, request(t, b, s, logical.UpdateOperation, "roles/app", map[string]any{"max_ttl": "30m"}))
	if readCreds(t, b, s, "app", nil).Data["access_token"] != first {
		t.Fatal("changing only max_ttl should keep the cached token")
	}
	mustSucceed(t, request(t, b, s, logical.UpdateOperation, "roles/app", map[string]any{"scopes": "read"}))
	second := readCreds(t, b, s, "app", nil)
	if second.Data["access_token"] == first || second.Data["scope"] != "read" {
		t.Fatal("changing scopes should obtain a new token with the new scope")
	}
}

func TestRoleRejectsBadInputAndStoresNothing(t *testing.T) {
	rsaPEM, _ := rsaKeyPEM(t)
	cases := map[string]struct {
		data  map[string]any
		field string
	}{
		"unknown grant":             {map[string]any{"grant_type": "bogus"}, "grant_type"},
		"unknown auth_method":       {map[string]any{"auth_method": "magic"}, "auth_method"},
		"password without username": {map[string]any{"grant_type": "password", "password": "x"}, "username"},
		"password without password": {map[string]any{"grant_type": "password", "username": "alice"}, "password"},
		"refresh_token missing":     {map[string]any{"grant_type": "refresh_token"}, "refresh_token"},
		"jwt_bearer without key":    {map[string]any{"grant_type": "jwt_bearer"}, "assertion_key"},
		"malformed PEM":             {map[string]any{"grant_type": "jwt_bearer", "assertion_key": "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----"}, "assertion_key"},
		"alg does not fit key":      {map[string]any{"grant_type": "jwt_bearer", "assertion_key": rsaPEM, "assertion_alg": "ES256"}, "assertion_alg"},
		"short HMAC secret":         {map[string]any{"grant_type": "jwt_bearer", "assertion_key": "short"}, "assertion_key"},
		"reserved claim":            {map[string]any{"grant_type": "jwt_bearer", "assertion_key": rsaPEM, "assertion_claims": `{"sub":"x"}`}, "assertion_claims"},
		"claims not an object":      {map[string]any{"grant_type": "jwt_bearer", "assertion_key": rsaPEM, "assertion_claims": `[1]`}, "assertion_claims"},
		"private_key_jwt w/o key":   {map[string]any{"auth_method": "private_key_jwt"}, "client_key"},
		"client key not PEM":        {map[string]any{"auth_method": "private_key_jwt", "client_key": "secret"}, "client_key"},
		"negative default_ttl":      {map[string]any{"default_ttl": -5}, "default_ttl"},
		"scope with space":          {map[string]any{"scopes": "read write"}, "scopes"},
		"reserved token_param":      {map[string]any{"token_params": map[string]any{"client_secret": "x"}}, "token_params"},
		"resource not absolute":     {map[string]any{"resource": "api"}, "resource"},
		"unknown field":             {map[string]any{"scope": "read"}, "scope"},
		"wrong type":                {map[string]any{"default_ttl": "soon"}, "default_ttl"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			p := newProviderWithClient(t)
			b, s := configured(t, p)
			before := s.snapshot(t)
			resp, err := requestErr(b, s, logical.UpdateOperation, "roles/new", tc.data)
			if err != nil && !strings.Contains(err.Error(), tc.field) {
				t.Fatalf("error %v does not name %s", err, tc.field)
			} else if err == nil {
				mustFailNaming(t, resp, tc.field)
			}
			if after := s.snapshot(t); !reflect.DeepEqual(before, after) {
				t.Fatal("a rejected write changed storage")
			}
		})
	}
}

func TestRoleNameOutsidePatternIsA400(t *testing.T) {
	b, s := newTestBackend(t)
	for _, name := range []string{"bad name", "-lead", "trail.", strings.Repeat("a", 129)} {
		mustFailNaming(t, request(t, b, s, logical.UpdateOperation, "roles/"+name, nil), "name")
	}
}
