//go:build e2e

package e2e

import (
	"net/http"
	"os"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"
)

// leaseTolerance is how far (seconds) the lease may be from the token's remaining lifetime.
const leaseTolerance = 5

// TestCore covers the core engine on the oauth/ mount that scripts/vault.sh set up:
// discovery-based config, caching, the lease, policies and Vault Agent.
func TestCore(t *testing.T) {
	c := env.client
	const mount = "oauth"

	// A client of its own with an access-token lifetime unlike the provider's default, so that
	// the lease must come from the token and not from a default.
	const tokenTTL = 1800
	clientID, clientSecret := registerClient(t, map[string]any{"access_token_ttl": tokenTTL})

	mustWrite(t, c, mount+"/config", map[string]any{
		"issuer":        env.ProviderURL,
		"client_id":     clientID,
		"client_secret": clientSecret,
	})
	mustWrite(t, c, mount+"/roles/a", map[string]any{"grant_type": "client_credentials", "scopes": "read"})
	mustWrite(t, c, mount+"/roles/b", map[string]any{"grant_type": "client_credentials", "scopes": "write"})
	t.Cleanup(func() {
		vaultDelete(t, c, mount+"/roles/a")
		vaultDelete(t, c, mount+"/roles/b")
		vaultDelete(t, c, mount+"/config")
	})

	var tokenA string // the access token of role a, from the first subtest on

	t.Run("a_creds_cached", func(t *testing.T) {
		env.ResetStats(t)
		s := mustRead(t, c, mount+"/creds/a")
		tokenA = str(s.Data["access_token"])
		if tokenA == "" {
			t.Fatalf("no access_token in %v", s.Data)
		}
		if tt := str(s.Data["token_type"]); !strings.EqualFold(tt, "bearer") {
			t.Errorf("token_type = %q, want Bearer", tt)
		}
		if sc := str(s.Data["scope"]); sc != "read" {
			t.Errorf("scope = %q, want %q", sc, "read")
		}

		in := introspect(t, tokenA)
		if in["active"] != true {
			t.Fatalf("introspection: token not active: %v", in)
		}
		if got := str(in["client_id"]); got != clientID {
			t.Errorf("introspection client_id = %q, want %q", got, clientID)
		}
		if got := str(in["scope"]); got != "read" {
			t.Errorf("introspection scope = %q, want %q", got, "read")
		}

		s2 := mustRead(t, c, mount+"/creds/a")
		if got := str(s2.Data["access_token"]); got != tokenA {
			t.Errorf("second read returned another token (not cached)")
		}
		st := env.ProviderStats(t)
		if n := st.ByClient[clientID]; n != 1 {
			t.Errorf("provider saw %d token requests from %s, want 1 (stats: %+v)", n, clientID, st)
		}
		if n := st.ByGrant["client_credentials"]; n != 1 {
			t.Errorf("provider saw %d client_credentials grants, want 1", n)
		}
	})

	t.Run("b_lease", func(t *testing.T) {
		before := time.Now()
		s := mustRead(t, c, mount+"/creds/a")
		now := time.Now()
		if s.LeaseID == "" {
			t.Errorf("LeaseID is empty")
		}
		if s.Renewable {
			t.Errorf("lease is renewable, want non-renewable")
		}
		lease := int64(s.LeaseDuration)
		if lease <= 0 || lease > tokenTTL {
			t.Fatalf("LeaseDuration = %d, want in (0, %d]", lease, tokenTTL)
		}
		expiresIn := num(t, s.Data["expires_in"], "expires_in")
		if abs(lease-expiresIn) > leaseTolerance {
			t.Errorf("LeaseDuration %d vs expires_in %d: more than %ds apart", lease, expiresIn, leaseTolerance)
		}
		token := str(s.Data["access_token"])
		in := introspect(t, token)
		if in["active"] != true {
			t.Fatalf("introspection: token not active: %v", in)
		}
		left := num(t, in["exp"], "introspection exp") - now.Unix()
		t.Logf("lease %ds (id %s), expires_in %d, introspection exp-now %d, expires_at %v", lease, s.LeaseID, expiresIn, left, s.Data["expires_at"])
		if abs(lease-left) > leaseTolerance {
			t.Errorf("LeaseDuration %d vs introspection exp-now %d: more than %ds apart", lease, left, leaseTolerance)
		}
		// expires_at: RFC 3339 or Unix seconds; either way about LeaseDuration from now.
		if ea := s.Data["expires_at"]; ea != nil {
			var at time.Time
			switch v := ea.(type) {
			case string:
				if p, err := time.Parse(time.RFC3339, v); err == nil {
					at = p
				} else if n, err := strconv.ParseInt(v, 10, 64); err == nil {
					at = time.Unix(n, 0)
				} else {
					t.Errorf("expires_at %q is neither RFC 3339 nor Unix seconds", v)
				}
			default:
				at = time.Unix(num(t, v, "expires_at"), 0)
			}
			if !at.IsZero() {
				if d := int64(at.Sub(before).Seconds()); abs(d-lease) > leaseTolerance {
					t.Errorf("expires_at %v is %ds from now, LeaseDuration %d", at, d, lease)
				}
			}
		} else {
			t.Errorf("no expires_at in %v", keys(s.Data))
		}
	})

	t.Run("c_policy", func(t *testing.T) {
		pc := newClientWithPolicy(t, "e2e-creds-a-only", `path "oauth/creds/a" { capabilities = ["read"] }`)
		s, code, msg := vaultRead(t, pc, mount+"/creds/a", nil)
		if code != http.StatusOK || s == nil || str(s.Data["access_token"]) == "" {
			t.Fatalf("read creds/a with the policy: HTTP %d: %s", code, msg)
		}
		_, code, msg = vaultRead(t, pc, mount+"/creds/b", nil)
		if code != http.StatusForbidden {
			t.Errorf("read creds/b with a policy for a only: HTTP %d (%s), want 403", code, msg)
		}
		_, code, _ = vaultWrite(t, pc, mount+"/roles/a", map[string]any{"scopes": "write"})
		if code != http.StatusForbidden {
			t.Errorf("write roles/a with a read-only creds policy: HTTP %d, want 403", code)
		}
	})

	t.Run("d_agent", func(t *testing.T) {
		rendered, stop := runAgent(t, `{{ with secret "oauth/creds/a" }}{{ .Data.access_token }}{{ end }}`)
		defer stop()
		got, err := os.ReadFile(rendered)
		if err != nil {
			t.Fatal(err)
		}
		want := str(mustRead(t, c, mount+"/creds/a").Data["access_token"])
		if string(got) != want {
			t.Errorf("agent rendered %q…, vault read gives %q…", prefix(string(got)), prefix(want))
		}
		if tokenA != "" && want != tokenA {
			t.Errorf("creds/a changed since the first read (cache not kept)")
		}
	})
}

// TestBadInput sends invalid input through the real API: each must give 400 naming the field
// and leave the stored config and roles as they were.
func TestBadInput(t *testing.T) {
	c := env.client
	mount := newMount(t, "oauth-bad")
	clientID, clientSecret := registerClient(t, nil)

	mustWrite(t, c, mount+"/config", map[string]any{
		"token_url":     env.Discovery.TokenEndpoint,
		"client_id":     clientID,
		"client_secret": clientSecret,
	})
	mustWrite(t, c, mount+"/roles/r", map[string]any{"scopes": "read", "default_ttl": "10m"})
	config0 := mustRead(t, c, mount+"/config").Data
	role0 := mustRead(t, c, mount+"/roles/r").Data

	unchanged := func(t *testing.T) {
		t.Helper()
		if got := mustRead(t, c, mount+"/config").Data; !reflect.DeepEqual(got, config0) {
			t.Errorf("config changed:\n got %v\nwant %v", got, config0)
		}
		if got := mustRead(t, c, mount+"/roles/r").Data; !reflect.DeepEqual(got, role0) {
			t.Errorf("role r changed:\n got %v\nwant %v", got, role0)
		}
	}

	cases := []struct {
		name  string
		path  string
		data  map[string]any // nil: a read
		codes []int
		field string // the message must contain it
	}{
		{"config_token_url_ftp", "config", map[string]any{"token_url": "ftp://x"}, []int{400}, "token_url"},
		{"config_token_url_http_remote", "config", map[string]any{"token_url": "http://example.com/token"}, []int{400}, "token_url"},
		{"role_grant_type_bogus", "roles/r", map[string]any{"grant_type": "bogus"}, []int{400}, "grant_type"},
		{"role_default_ttl_negative", "roles/r", map[string]any{"scopes": "read,write", "default_ttl": -5}, []int{400}, "default_ttl"},
		{"creds_unknown_role", "creds/nosuchrole", nil, []int{400, 404}, "nosuchrole"},
		{"role_bad_name", "roles/bad name" /* sent as bad%20name */, map[string]any{"scopes": "read"}, []int{400}, "name"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var code int
			var msg string
			if tc.data == nil {
				_, code, msg = vaultRead(t, c, mount+"/"+tc.path, nil)
			} else {
				_, code, msg = vaultWrite(t, c, mount+"/"+tc.path, tc.data)
			}
			t.Logf("HTTP %d: %s", code, msg)
			okCode := false
			for _, w := range tc.codes {
				okCode = okCode || code == w
			}
			if !okCode {
				t.Errorf("HTTP %d (%q), want %v", code, msg, tc.codes)
			}
			if !strings.Contains(msg, tc.field) {
				t.Errorf("error message %q does not name %q", msg, tc.field)
			}
			unchanged(t)
		})
	}

	t.Run("roles_list_unchanged", func(t *testing.T) {
		if got := vaultList(t, c, mount+"/roles"); !reflect.DeepEqual(got, []string{"r"}) {
			t.Errorf("LIST roles = %v, want [r]", got)
		}
	})
}

func keys(m map[string]any) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}

func prefix(s string) string {
	if len(s) > 12 {
		return s[:12]
	}
	return s
}
