package oauth

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"maps"
	"strings"
	"testing"

	"github.com/hashicorp/vault/sdk/logical"
)

// hostileCase is one bad request: it must get a 400 that names field and leave storage as it was.
type hostileCase struct {
	name  string
	op    logical.Operation
	path  string
	data  map[string]any
	field string
}

// hmacKey is a valid HS256 assertion key: cases that need a valid jwt_bearer role use it.
const hmacKey = "hostile-input-shared-secret-0123456789"

func hostileCases(t *testing.T) []hostileCase {
	rsa1024 := pemKey(t, "RSA PRIVATE KEY", func() []byte {
		k, err := rsa.GenerateKey(rand.Reader, 1024)
		if err != nil {
			t.Fatal(err)
		}
		return x509.MarshalPKCS1PrivateKey(k)
	})
	ecKey := pemKey(t, "EC PRIVATE KEY", func() []byte {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		der, err := x509.MarshalECPrivateKey(k)
		if err != nil {
			t.Fatal(err)
		}
		return der
	})
	badPEM := "-----BEGIN PRIVATE KEY-----\nAAAAnotakey\n-----END PRIVATE KEY-----\n"
	certPEM := "-----BEGIN CERTIFICATE-----\nMIIBAAAA\n-----END CERTIFICATE-----\n"
	big := strings.Repeat("x", maxFieldBytes+1)
	jwt := func(extra map[string]any) map[string]any {
		d := map[string]any{"grant_type": "jwt_bearer", "assertion_key": hmacKey}
		maps.Copy(d, extra)
		return d
	}

	cfg := func(name, field string, data map[string]any) hostileCase {
		return hostileCase{name: "config/" + name, op: logical.UpdateOperation, path: "config", data: data, field: field}
	}
	role := func(name, field string, data map[string]any) hostileCase {
		return hostileCase{name: "roles/" + name, op: logical.UpdateOperation, path: "roles/app", data: data, field: field}
	}
	mistypedSecrets := []hostileCase{
		role("password given twice", "password", map[string]any{"grant_type": "password", "username": "u", "password": []any{"s3cr3t-password-1", "s3cr3t-password-2"}}),
		role("refresh_token as a map", "refresh_token", map[string]any{"refresh_token": map[string]any{"rt": "s3cr3t-refresh-token"}}),
	}
	creds := func(name, path, field string, data map[string]any) hostileCase {
		return hostileCase{name: "creds/" + name, op: logical.ReadOperation, path: path, data: data, field: field}
	}

	return append(mistypedSecrets, []hostileCase{
		// config: types and ranges
		cfg("timeout not a duration", "timeout", map[string]any{"timeout": "soon"}),
		cfg("timeout bad unit", "timeout", map[string]any{"timeout": "10x"}),
		cfg("timeout negative", "timeout", map[string]any{"timeout": -5}),
		cfg("timeout zero", "timeout", map[string]any{"timeout": 0}),
		cfg("timeout too long", "timeout", map[string]any{"timeout": "6m"}),
		cfg("timeout a list", "timeout", map[string]any{"timeout": []any{"1s", "2s"}}),
		cfg("client_secret given twice", "client_secret", map[string]any{"client_secret": []any{"first-secret-value", "second-secret-value"}}),
		cfg("max_concurrent_refreshes zero", "max_concurrent_refreshes", map[string]any{"max_concurrent_refreshes": 0}),
		cfg("max_concurrent_refreshes huge", "max_concurrent_refreshes", map[string]any{"max_concurrent_refreshes": 100000}),
		cfg("max_concurrent_refreshes text", "max_concurrent_refreshes", map[string]any{"max_concurrent_refreshes": "many"}),
		cfg("refresh_fraction above 0.9", "refresh_fraction", map[string]any{"refresh_fraction": 0.95}),
		cfg("refresh_fraction negative", "refresh_fraction", map[string]any{"refresh_fraction": -0.1}),
		cfg("refresh_fraction text", "refresh_fraction", map[string]any{"refresh_fraction": "half"}),
		cfg("refresh_buffer negative", "refresh_buffer", map[string]any{"refresh_buffer": "-1"}),
		cfg("refresh_buffer over a year", "refresh_buffer", map[string]any{"refresh_buffer": "9000h"}),
		// config: URLs, schemes, hosts
		cfg("token_url ftp", "token_url", map[string]any{"token_url": "ftp://idp.example.com/token"}),
		cfg("token_url http to a remote host", "token_url", map[string]any{"token_url": "http://idp.example.com/token"}),
		cfg("token_url http to a private address", "token_url", map[string]any{"token_url": "http://10.0.0.1/token"}),
		cfg("token_url with credentials", "token_url", map[string]any{"token_url": "https://user:hunter2@idp.example.com/token"}),
		cfg("token_url with fragment", "token_url", map[string]any{"token_url": "https://idp.example.com/token#x"}),
		cfg("token_url relative", "token_url", map[string]any{"token_url": "/token"}),
		cfg("token_url no host", "token_url", map[string]any{"token_url": "https:///token"}),
		cfg("token_url port only", "token_url", map[string]any{"token_url": "https://:443/token"}),
		cfg("token_url bad port", "token_url", map[string]any{"token_url": "https://idp.example.com:99999/token"}),
		cfg("token_url javascript", "token_url", map[string]any{"token_url": "javascript:alert(1)"}),
		cfg("token_url space in host", "token_url", map[string]any{"token_url": "https://idp example.com/token"}),
		cfg("token_url too long", "token_url", map[string]any{"token_url": "https://idp.example.com/" + strings.Repeat("a", 3000)}),
		cfg("token_url emptied without issuer", "issuer", map[string]any{"token_url": ""}),
		cfg("issuer not a URL", "issuer", map[string]any{"issuer": "not a url"}),
		cfg("auth_url http remote", "auth_url", map[string]any{"auth_url": "http://idp.example.com/auth"}),
		cfg("device_auth_url scheme", "device_auth_url", map[string]any{"device_auth_url": "ws://idp.example.com/device"}),
		cfg("revocation_url gopher", "revocation_url", map[string]any{"revocation_url": "gopher://idp.example.com/revoke"}),
		// config: enums, PEM, keys, sizes, unknown fields
		cfg("auth_method unknown", "auth_method", map[string]any{"auth_method": "client_secret_magic"}),
		cfg("auth_method wrong case", "auth_method", map[string]any{"auth_method": "CLIENT_SECRET_BASIC"}),
		cfg("ca_pem not PEM", "ca_pem", map[string]any{"ca_pem": "not a certificate"}),
		cfg("ca_pem a private key", "ca_pem", map[string]any{"ca_pem": ecKey}),
		cfg("ca_pem oversized", "ca_pem", map[string]any{"ca_pem": strings.Repeat("A", maxPEMBytes+1)}),
		cfg("client_key not PEM", "client_key", map[string]any{"auth_method": "private_key_jwt", "client_key": "garbage-key"}),
		cfg("client_key malformed PEM", "client_key", map[string]any{"auth_method": "private_key_jwt", "client_key": badPEM}),
		cfg("client_key a certificate", "client_key", map[string]any{"auth_method": "private_key_jwt", "client_key": certPEM}),
		cfg("client_key RSA 1024", "client_key", map[string]any{"auth_method": "private_key_jwt", "client_key": rsa1024}),
		cfg("client_key_alg not for EC", "client_key_alg", map[string]any{"auth_method": "private_key_jwt", "client_key": ecKey, "client_key_alg": "RS256"}),
		cfg("client_key_alg none", "client_key_alg", map[string]any{"auth_method": "private_key_jwt", "client_key": ecKey, "client_key_alg": "none"}),
		cfg("client_key oversized", "client_key", map[string]any{"auth_method": "private_key_jwt", "client_key": "-----BEGIN " + strings.Repeat("A", maxPEMBytes)}),
		cfg("client_secret oversized", "client_secret", map[string]any{"client_secret": big}),
		cfg("client_id oversized", "client_id", map[string]any{"client_id": big}),
		cfg("unknown field", "tokenurl", map[string]any{"tokenurl": "https://idp.example.com/token"}),
		cfg("misspelt secret", "client_secrett", map[string]any{"client_secrett": "s3cr3t-misspelt-value"}),

		// roles: grants, enums, scopes, URIs, params
		role("grant_type unknown", "grant_type", map[string]any{"grant_type": "implicit"}),
		role("grant_type empty", "grant_type", map[string]any{"grant_type": ""}),
		role("grant_type wire URI", "grant_type", map[string]any{"grant_type": "urn:ietf:params:oauth:grant-type:saml2-bearer"}),
		role("auth_method unknown", "auth_method", map[string]any{"auth_method": "basic"}),
		role("scope with quote", "scopes", map[string]any{"scopes": `read,wr"ite`}),
		role("scope with backslash", "scopes", map[string]any{"scopes": `read,wr\ite`}),
		role("scope not ASCII", "scopes", map[string]any{"scopes": "lecture,écriture"}),
		role("scope too long", "scopes", map[string]any{"scopes": strings.Repeat("s", 2000)}),
		role("resource not a URI", "resource", map[string]any{"resource": "api"}),
		role("resource with fragment", "resource", map[string]any{"resource": "https://api.example.com/#x"}),
		role("token_params reserved grant_type", "token_params", map[string]any{"token_params": "grant_type=password"}),
		role("token_params reserved client_secret", "token_params", map[string]any{"token_params": "client_secret=x"}),
		role("token_params empty name", "token_params", map[string]any{"token_params": "=value"}),
		role("token_params no value", "token_params", map[string]any{"token_params": "novalue"}),
		role("token_params oversized", "token_params", map[string]any{"token_params": "k=" + big}),
		// roles: durations
		role("default_ttl zero", "default_ttl", map[string]any{"default_ttl": 0}),
		role("default_ttl negative", "default_ttl", map[string]any{"default_ttl": "-1"}),
		role("default_ttl over a year", "default_ttl", map[string]any{"default_ttl": "9000h"}),
		role("max_ttl over a year", "max_ttl", map[string]any{"max_ttl": "10000h"}),
		role("max_ttl text", "max_ttl", map[string]any{"max_ttl": "forever"}),
		role("refresh_fraction one", "refresh_fraction", map[string]any{"refresh_fraction": 1}),
		// roles: grant inputs
		role("password grant without username", "username", map[string]any{"grant_type": "password"}),
		role("password grant without password", "password", map[string]any{"grant_type": "password", "username": "alice"}),
		role("refresh_token grant without token", "refresh_token", map[string]any{"grant_type": "refresh_token"}),
		role("jwt_bearer without key", "assertion_key", map[string]any{"grant_type": "jwt_bearer"}),
		role("jwt_bearer short shared secret", "assertion_key", jwt(map[string]any{"assertion_key": "short-secret"})),
		role("jwt_bearer malformed PEM", "assertion_key", jwt(map[string]any{"assertion_key": badPEM})),
		role("jwt_bearer two PEM blocks", "assertion_key", jwt(map[string]any{"assertion_key": ecKey + ecKey})),
		role("jwt_bearer alg for another key", "assertion_alg", jwt(map[string]any{"assertion_alg": "RS256"})),
		role("jwt_bearer alg unknown", "assertion_alg", jwt(map[string]any{"assertion_alg": "HS1"})),
		role("jwt_bearer ttl zero", "assertion_ttl", jwt(map[string]any{"assertion_ttl": 0})),
		role("jwt_bearer ttl too long", "assertion_ttl", jwt(map[string]any{"assertion_ttl": "48h"})),
		role("assertion_claims not JSON", "assertion_claims", jwt(map[string]any{"assertion_claims": "{not json"})),
		role("assertion_claims an array", "assertion_claims", jwt(map[string]any{"assertion_claims": "[1,2]"})),
		role("assertion_claims null", "assertion_claims", jwt(map[string]any{"assertion_claims": "null"})),
		role("assertion_claims reserved iss", "assertion_claims", jwt(map[string]any{"assertion_claims": `{"iss":"someone-else"}`})),
		role("assertion_claims escaped exp", "assertion_claims", jwt(map[string]any{"assertion_claims": `{"\u0065xp":1}`})),
		role("client_secret_jwt short secret", "client_secret", map[string]any{"auth_method": "client_secret_jwt", "client_secret": "too-short"}),
		role("private_key_jwt without key", "client_key", map[string]any{"auth_method": "private_key_jwt"}),
		// roles: sizes, unknown fields, names
		role("audience oversized", "audience", map[string]any{"audience": big}),
		role("password oversized", "password", map[string]any{"grant_type": "password", "username": "alice", "password": big}),
		role("refresh_token oversized", "refresh_token", map[string]any{"grant_type": "refresh_token", "refresh_token": big}),
		role("unknown field", "scope", map[string]any{"scope": "read"}),
		{name: "roles/name with space", op: logical.UpdateOperation, path: "roles/bad name", field: "name"},
		{name: "roles/name leading dash", op: logical.UpdateOperation, path: "roles/-app", field: "name"},
		{name: "roles/name trailing dot", op: logical.UpdateOperation, path: "roles/app.", field: "name"},
		{name: "roles/name too long", op: logical.UpdateOperation, path: "roles/" + strings.Repeat("a", 129), field: "name"},
		{name: "roles/name not ASCII", op: logical.UpdateOperation, path: "roles/rôle", field: "name"},
		{name: "roles/name with NUL", op: logical.UpdateOperation, path: "roles/a\x00b", field: "name"},
		{name: "roles/read bad name", op: logical.ReadOperation, path: "roles/bad name", field: "name"},
		{name: "roles/delete bad name", op: logical.DeleteOperation, path: "roles/bad name", field: "name"},

		// creds
		creds("min_seconds negative", "creds/app", "min_seconds", map[string]any{"min_seconds": -1}),
		creds("min_seconds text", "creds/app", "min_seconds", map[string]any{"min_seconds": "soon"}),
		creds("min_seconds over a year", "creds/app", "min_seconds", map[string]any{"min_seconds": 999_999_999}),
		creds("unknown field", "creds/app", "ttl", map[string]any{"ttl": 60}),
		creds("bad name", "creds/bad name", "name", nil),
		creds("name leading dot", "creds/.app", "name", nil),
		creds("unknown role", "creds/missing", "name", nil),

		// roles/<name>/status and rotate/<name>
		{name: "status/bad name", op: logical.ReadOperation, path: "roles/bad name/status", field: "name"},
		{name: "status/unknown role", op: logical.ReadOperation, path: "roles/missing/status", field: "name"},
		{name: "status/unknown field", op: logical.ReadOperation, path: "roles/app/status", data: map[string]any{"verbose": true}, field: "verbose"},
		{name: "rotate/bad name", op: logical.UpdateOperation, path: "rotate/bad name", field: "name"},
		{name: "rotate/name too long", op: logical.UpdateOperation, path: "rotate/" + strings.Repeat("r", 200), field: "name"},
		{name: "rotate/unknown role", op: logical.UpdateOperation, path: "rotate/missing", field: "name"},
		{name: "rotate/unknown field", op: logical.UpdateOperation, path: "rotate/app", data: map[string]any{"revoke": false}, field: "revoke"},
		{name: "authorize/name too long", op: logical.UpdateOperation, path: "authorize/" + strings.Repeat("r", 200), field: "name"},
		{name: "authorize/unknown role", op: logical.UpdateOperation, path: "authorize/missing", field: "name"},
		{name: "authorize/unknown field", op: logical.UpdateOperation, path: "authorize/app", data: map[string]any{"scope": "x"}, field: "scope"},
		{name: "authorize/not an authorization_code role", op: logical.UpdateOperation, path: "authorize/app", field: "grant_type"},
		{name: "device/unknown role", op: logical.UpdateOperation, path: "device/missing", field: "name"},
		{name: "device/not a device_code role", op: logical.UpdateOperation, path: "device/app", field: "grant_type"},
		{name: "callback/code twice", op: logical.UpdateOperation, path: "callback", data: map[string]any{"code": []any{"code-value-one", "code-value-two"}, "state": "s"}, field: "code"},
		{name: "callback/state twice", op: logical.UpdateOperation, path: "callback", data: map[string]any{"code": "c", "state": []any{"state-value-one", "state-value-two"}}, field: "state"},
		{name: "callback/unknown field", op: logical.UpdateOperation, path: "callback", data: map[string]any{"code": "code-value-one", "state": "state-value-one", "verifier": "v"}, field: "verifier"},
		{name: "role/auth_params reserved", op: logical.UpdateOperation, path: "roles/app", data: map[string]any{"auth_params": "code_challenge=x"}, field: "auth_params"},
		{name: "role/auth_params not pairs", op: logical.UpdateOperation, path: "roles/app", data: map[string]any{"auth_params": "offline"}, field: "auth_params"},
		{name: "role/redirect_uri fragment", op: logical.UpdateOperation, path: "roles/app", data: map[string]any{"redirect_uri": "https://vault.example/cb#x"}, field: "redirect_uri"},
		{name: "config/redirect_uri not a URL", op: logical.UpdateOperation, path: "config", data: map[string]any{"redirect_uri": "callback"}, field: "redirect_uri"},
	}...)
}

func pemKey(t *testing.T, blockType string, der func() []byte) string {
	t.Helper()
	return string(pem.EncodeToMemory(&pem.Block{Type: blockType, Bytes: der()}))
}

// neverEchoed are the fields whose values no error may repeat (client_secrett: a misspelt one).
var neverEchoed = append([]string{"client_secrett"}, secretFields...)

func TestHostileInputIsRejectedWithoutSideEffects(t *testing.T) {
	p := newProviderWithClient(t)
	b, s := configured(t, p)
	readCreds(t, b, s, "app", nil) // a cached token, so that storage holds every kind of entry

	cases := hostileCases(t)
	if len(cases) < 60 {
		t.Fatalf("only %d hostile cases", len(cases))
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := s.snapshot(t)
			requests := p.Requests()
			resp, err := requestErr(b, s, tc.op, tc.path, tc.data)
			if err != nil {
				t.Fatalf("want a 400 naming %q, got an internal error: %v", tc.field, err)
			}
			if resp == nil || !resp.IsError() {
				t.Fatalf("want a 400 naming %q, got %#v", tc.field, resp)
			}
			msg := resp.Error().Error()
			if !namesField(msg, tc.field) {
				t.Errorf("%q does not name the field %q", msg, tc.field)
			}
			for _, f := range neverEchoed {
				for _, v := range stringsIn(tc.data[f]) {
					if len(v) >= 8 && strings.Contains(msg, v) {
						t.Errorf("the error echoes the %s", f)
					}
				}
			}
			if after := s.snapshot(t); !maps.Equal(before, after) {
				t.Errorf("storage changed:\nbefore %v\nafter  %v", keysOf(before), keysOf(after))
			}
			if p.Requests() != requests {
				t.Error("bad input reached the provider")
			}
		})
	}
}

// stringsIn returns the strings in a field value, whether given alone or in a list.
func stringsIn(v any) []string {
	switch v := v.(type) {
	case string:
		return []string{v}
	case []any:
		var out []string
		for _, e := range v {
			out = append(out, stringsIn(e)...)
		}
		return out
	}
	return nil
}

// namesField reports whether msg blames field: our errors start with "field: ", Vault's type
// errors quote it.
func namesField(msg, field string) bool {
	return strings.HasPrefix(msg, field+":") || strings.Contains(msg, fmt.Sprintf("%q", field))
}

func keysOf(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for k, v := range m {
		out = append(out, fmt.Sprintf("%s(%d)", k, len(v)))
	}
	return out
}
