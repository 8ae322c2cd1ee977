package oauth

import (
	"context"
	"crypto"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/hashicorp/vault/sdk/logical"

	"github.com/oauth-broker/vault-plugin-secrets-oauth/internal/testprovider"
)

// jwksOf reads the mount's jwks path as an unauthenticated HTTP client would get it.
func jwksOf(t testing.TB, b *backend, s logical.Storage) (jose.JSONWebKeySet, *logical.Response) {
	t.Helper()
	resp := mustSucceed(t, request(t, b, s, logical.ReadOperation, "jwks", nil))
	var set jose.JSONWebKeySet
	if err := json.Unmarshal(resp.Data[logical.HTTPRawBody].([]byte), &set); err != nil {
		t.Fatalf("jwks body: %v", err)
	}
	return set, resp
}

// jwksServer serves the mount's jwks over HTTP, as Vault would at /v1/<mount>/jwks.
func jwksServer(t testing.TB, b *backend, s logical.Storage) *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		resp, err := requestErr(b, s, logical.ReadOperation, "jwks", nil)
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", resp.Data[logical.HTTPContentType].(string))
		_, _ = w.Write(resp.Data[logical.HTTPRawBody].([]byte))
	}))
	t.Cleanup(srv.Close)
	return srv
}

func kidOf(v any) string { return v.(map[string]any)["kid"].(string) }

func kids(set jose.JSONWebKeySet) []string {
	var out []string
	for _, k := range set.Keys {
		out = append(out, k.KeyID)
	}
	return out
}

func TestKeyCreateShowsPublicPartsOnly(t *testing.T) {
	b, s := newTestBackend(t)
	for _, alg := range keyAlgs {
		name := "k-" + strings.ToLower(alg)
		data := mustSucceed(t, request(t, b, s, logical.UpdateOperation, "keys/"+name, map[string]any{"alg": alg})).Data
		if data["alg"] != alg || data["retire_after"] != int64(86400) || data["rotation_period"] != int64(0) {
			t.Fatalf("%s: unexpected key: %v", alg, data)
		}
		read := mustSucceed(t, request(t, b, s, logical.ReadOperation, "keys/"+name, nil)).Data
		for _, version := range []string{"current", "next"} {
			v := read[version].(map[string]any)
			var jwk jose.JSONWebKey
			if err := json.Unmarshal(v["jwk"].(json.RawMessage), &jwk); err != nil {
				t.Fatalf("%s %s jwk: %v", alg, version, err)
			}
			if !jwk.IsPublic() || jwk.Algorithm != alg {
				t.Fatalf("%s %s: jwk is not a public %s key: %s", alg, version, alg, v["jwk"])
			}
			// RFC 7638: the kid is the key's SHA-256 thumbprint.
			thumb, _ := jwk.Thumbprint(crypto.SHA256)
			if want := base64.RawURLEncoding.EncodeToString(thumb); v["kid"] != want || jwk.KeyID != want {
				t.Fatalf("%s %s: kid %v, thumbprint %s", alg, version, v["kid"], want)
			}
		}
		if kidOf(read["current"]) == kidOf(read["next"]) {
			t.Fatalf("%s: current and next are the same key", alg)
		}
		buf, _ := json.Marshal(read)
		for _, private := range []string{`"d"`, `"p"`, `"q"`, `"dp"`, `"private"`} {
			if strings.Contains(string(buf), private) {
				t.Fatalf("%s: key read shows %s: %s", alg, private, buf)
			}
		}
	}
	list := mustSucceed(t, request(t, b, s, logical.ListOperation, "keys/", nil)).Data["keys"].([]string)
	if len(list) != len(keyAlgs) {
		t.Fatalf("keys/ lists %v", list)
	}
	if !slices.Contains(b.SpecialPaths().SealWrapStorage, keyPrefix) {
		t.Fatal("keys/ storage is not seal-wrapped")
	}
}

func TestKeyBadInputIsRefused(t *testing.T) {
	b, s := newTestBackend(t)
	mustFailNaming(t, request(t, b, s, logical.UpdateOperation, "keys/k", map[string]any{"alg": "HS256"}), "alg")
	mustFailNaming(t, request(t, b, s, logical.UpdateOperation, "keys/k", map[string]any{"rotation_period": "10m"}), "rotation_period")
	mustFailNaming(t, request(t, b, s, logical.UpdateOperation, "keys/k", map[string]any{"retire_after": "0"}), "retire_after")
	if list, _ := request(t, b, s, logical.ListOperation, "keys/", nil).Data["keys"].([]string); len(list) != 0 {
		t.Fatalf("a refused write stored keys %v", list)
	}
	mustSucceed(t, request(t, b, s, logical.UpdateOperation, "keys/k", nil))
	mustFailNaming(t, request(t, b, s, logical.UpdateOperation, "keys/k", map[string]any{"alg": "RS256"}), "alg")
	mustFailNaming(t, request(t, b, s, logical.UpdateOperation, "keys/missing/rotate", nil), "missing")
}

func TestKeyRotatePublishesAheadAndRetires(t *testing.T) {
	b, s := newTestBackend(t)
	clk := clockOf(b)
	clk.Pin(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	before := mustSucceed(t, request(t, b, s, logical.UpdateOperation, "keys/k", map[string]any{"retire_after": "2h"})).Data
	set, resp := jwksOf(t, b, s)
	if got, want := kids(set), []string{kidOf(before["current"]), kidOf(before["next"])}; !slices.Equal(got, want) {
		t.Fatalf("jwks has %v, want current and next %v", got, want)
	}
	if resp.Data[logical.HTTPContentType] != "application/jwk-set+json" || !strings.Contains(resp.Data[logical.HTTPCacheControlHeader].(string), "max-age=300") {
		t.Fatalf("jwks answer headers: %v", resp.Data)
	}

	clk.Advance(time.Hour)
	after := mustSucceed(t, request(t, b, s, logical.UpdateOperation, "keys/k/rotate", nil)).Data
	if kidOf(after["current"]) != kidOf(before["next"]) {
		t.Fatal("rotate did not make the published next key current")
	}
	retiring := after["retiring"].([]map[string]any)
	if len(retiring) != 1 || kidOf(retiring[0]) != kidOf(before["current"]) || retiring[0]["retire_at"] != "2026-01-01T03:00:00Z" {
		t.Fatalf("retiring: %v", retiring)
	}
	set, _ = jwksOf(t, b, s)
	if got := kids(set); len(got) != 3 || !slices.Contains(got, kidOf(before["current"])) || !slices.Contains(got, kidOf(after["next"])) {
		t.Fatalf("jwks after rotate has %v", got)
	}

	// The retired key leaves the JWKS when retire_after has passed, and the tick stores that.
	clk.Advance(2 * time.Hour)
	if err := b.periodic(context.Background(), &logical.Request{Storage: s}); err != nil {
		t.Fatal(err)
	}
	set, _ = jwksOf(t, b, s)
	if got := kids(set); len(got) != 2 || slices.Contains(got, kidOf(before["current"])) {
		t.Fatalf("jwks after retire_after has %v", got)
	}
	stored, _ := readEntry[mountKey](context.Background(), s, keyPrefix+"k")
	if len(stored.Retiring) != 0 {
		t.Fatalf("the retired key is still stored: %v", stored.Retiring)
	}
	if resp := request(t, b, s, logical.UpdateOperation, "keys/k/rotate", nil); len(resp.Warnings) != 0 {
		t.Fatalf("a rotation of a key published for hours warns: %v", resp.Warnings)
	}
	// Rotating again at once signs with a key published a moment ago: providers may not have it.
	if resp := request(t, b, s, logical.UpdateOperation, "keys/k/rotate", nil); len(resp.Warnings) != 1 || !strings.Contains(resp.Warnings[0], "max-age") {
		t.Fatalf("a quick second rotation: warnings %v", resp.Warnings)
	}
}

// A tick rotates keys whose rotation_period has passed, and reads no key that is not due.
func TestKeyRotationPeriodRotatesOnTick(t *testing.T) {
	b, s := newTestBackend(t)
	clk := clockOf(b)
	clk.Pin(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	first := mustSucceed(t, request(t, b, s, logical.UpdateOperation, "keys/scheduled", map[string]any{"rotation_period": "2h"})).Data
	mustSucceed(t, request(t, b, s, logical.UpdateOperation, "keys/manual", nil))
	if first["next_rotation"] != "2026-01-01T02:00:00Z" {
		t.Fatalf("next_rotation: %v", first["next_rotation"])
	}
	keyGets := 0
	s.onGet = func(key string) {
		if strings.HasPrefix(key, keyPrefix) {
			keyGets++
		}
	}
	clk.Advance(time.Hour)
	if err := b.maintainKeys(context.Background(), s); err != nil {
		t.Fatal(err)
	}
	if keyGets != 0 {
		t.Fatalf("a tick with no key due read %d keys", keyGets)
	}
	clk.Advance(time.Hour)
	if err := b.maintainKeys(context.Background(), s); err != nil {
		t.Fatal(err)
	}
	if keyGets != 1 {
		t.Fatalf("a tick with one key due read %d keys", keyGets)
	}
	s.onGet = nil
	now := mustSucceed(t, request(t, b, s, logical.ReadOperation, "keys/scheduled", nil)).Data
	if kidOf(now["current"]) != kidOf(first["next"]) || now["next_rotation"] != "2026-01-01T04:00:00Z" {
		t.Fatalf("the schedule did not rotate: %v", now)
	}

	// A restarted mount rebuilds the schedule from storage.
	b2 := newBackend(clk, b.newClient)
	conf := logical.TestBackendConfig()
	conf.StorageView = s
	if err := b2.Setup(context.Background(), conf); err != nil {
		t.Fatal(err)
	}
	if err := b2.initialize(context.Background(), &logical.InitializationRequest{Storage: s}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b2.clean(context.Background()) })
	clk.Advance(2 * time.Hour)
	if due := b2.keySchedule.dueBy(clk.Now()); !slices.Equal(due, []string{"scheduled"}) {
		t.Fatalf("rebuilt schedule has %v due", due)
	}
}

func TestKeyDeleteRefusedWhileUsed(t *testing.T) {
	p := testprovider.New(t)
	b, s := newTestBackend(t)
	mustSucceed(t, request(t, b, s, logical.UpdateOperation, "keys/k", nil))
	mustSucceed(t, request(t, b, s, logical.UpdateOperation, "config", map[string]any{"token_url": p.TokenURL(), "client_id": "c", "client_key_name": "k"}))
	mustSucceed(t, request(t, b, s, logical.UpdateOperation, "roles/signer", map[string]any{"grant_type": "jwt_bearer", "assertion_key_name": "k"}))
	resp := request(t, b, s, logical.DeleteOperation, "keys/k", nil)
	mustFailNaming(t, resp, "config (client_key_name)")
	mustFailNaming(t, resp, "role signer (assertion_key_name)")

	mustSucceed(t, request(t, b, s, logical.UpdateOperation, "config", map[string]any{"client_key_name": "", "client_secret": "s"}))
	mustSucceed(t, request(t, b, s, logical.DeleteOperation, "roles/signer", nil))
	mustSucceed(t, request(t, b, s, logical.DeleteOperation, "keys/k", nil))
	if read := request(t, b, s, logical.ReadOperation, "keys/k", nil); read != nil {
		t.Fatalf("deleted key still reads: %v", read.Data)
	}
}

func TestKeyNameFieldsAreChecked(t *testing.T) {
	p := testprovider.New(t)
	b, s := newTestBackend(t)
	mustSucceed(t, request(t, b, s, logical.UpdateOperation, "config", map[string]any{"token_url": p.TokenURL(), "client_id": "c"}))
	mustFailNaming(t, request(t, b, s, logical.UpdateOperation, "roles/r", map[string]any{"client_key_name": "missing"}), "client_key_name")
	mustSucceed(t, request(t, b, s, logical.UpdateOperation, "keys/k", nil))
	resp := request(t, b, s, logical.UpdateOperation, "roles/r", map[string]any{"client_key_name": "k", "client_key": testPEMKey(t)})
	mustFailNaming(t, resp, "client_key_name")
	mustFailNaming(t, resp, "client_key")
	mustFailNaming(t, request(t, b, s, logical.UpdateOperation, "roles/r", map[string]any{"client_key_name": "k", "client_key_alg": "ES256"}), "client_key_alg")
	resp = request(t, b, s, logical.UpdateOperation, "roles/r", map[string]any{"grant_type": "jwt_bearer", "assertion_key_name": "k", "assertion_key": testPEMKey(t)})
	mustFailNaming(t, resp, "assertion_key_name")
	mustFailNaming(t, resp, "assertion_key")
	if r := request(t, b, s, logical.ReadOperation, "roles/r", nil); r != nil {
		t.Fatalf("refused writes created the role: %v", r.Data)
	}
}

// private_key_jwt with a mount key: the provider verifies against the JWKS it fetches from the
// mount; a rotation neither breaks grants nor drops the cached token.
func TestKeyPrivateKeyJWTThroughJWKS(t *testing.T) {
	for _, alg := range keyAlgs {
		t.Run(alg, func(t *testing.T) {
			p := testprovider.New(t)
			b, s := newTestBackend(t)
			mustSucceed(t, request(t, b, s, logical.UpdateOperation, "keys/client", map[string]any{"alg": alg}))
			p.AddClient(&testprovider.Client{ID: "keyed", AuthMethod: "private_key_jwt", JWKSURI: jwksServer(t, b, s).URL})
			mustSucceed(t, request(t, b, s, logical.UpdateOperation, "config", map[string]any{"token_url": p.TokenURL()}))
			mustSucceed(t, request(t, b, s, logical.UpdateOperation, "roles/app", map[string]any{"client_id": "keyed", "auth_method": "private_key_jwt", "client_key_name": "client"}))
			key := mustSucceed(t, request(t, b, s, logical.ReadOperation, "keys/client", nil)).Data

			first := readCreds(t, b, s, "app", nil).Data["access_token"]
			if got := p.AssertionKIDs(); !slices.Equal(got, []string{kidOf(key["current"])}) || p.JWKSFetches() != 1 {
				t.Fatalf("assertion kids %v, jwks fetches %d", got, p.JWKSFetches())
			}

			// Rotation keeps the cached token: the role's binding names the key, not its kid.
			mustSucceed(t, request(t, b, s, logical.UpdateOperation, "keys/client/rotate", nil))
			if again := readCreds(t, b, s, "app", nil).Data["access_token"]; again != first {
				t.Fatal("a key rotation replaced the cached token")
			}
			// The next key was published before it signed: the provider's cached set has it.
			mustSucceed(t, request(t, b, s, logical.UpdateOperation, "rotate/app", nil))
			if got := p.AssertionKIDs(); len(got) != 2 || got[1] != kidOf(key["next"]) || p.JWKSFetches() != 1 {
				t.Fatalf("after a rotation: assertion kids %v, jwks fetches %d", got, p.JWKSFetches())
			}
			// A second rotation signs with a key published after the provider's fetch: it
			// fetches the set again and finds it.
			second := mustSucceed(t, request(t, b, s, logical.UpdateOperation, "keys/client/rotate", nil)).Data
			mustSucceed(t, request(t, b, s, logical.UpdateOperation, "rotate/app", nil))
			if got := p.AssertionKIDs(); len(got) != 3 || got[2] != kidOf(second["current"]) || p.JWKSFetches() != 2 {
				t.Fatalf("after two rotations: assertion kids %v, jwks fetches %d", got, p.JWKSFetches())
			}
		})
	}
}

// The jwt_bearer grant signs its assertion with a mount key.
func TestKeyJWTBearerAssertion(t *testing.T) {
	p := testprovider.New(t)
	b, s := newTestBackend(t)
	mustSucceed(t, request(t, b, s, logical.UpdateOperation, "keys/assert", map[string]any{"alg": "RS256"}))
	pub := mustSucceed(t, request(t, b, s, logical.ReadOperation, "keys/assert", nil)).Data["current"].(map[string]any)["jwk"].(json.RawMessage)
	var jwk jose.JSONWebKey
	if err := json.Unmarshal(pub, &jwk); err != nil {
		t.Fatal(err)
	}
	p.AddClient(&testprovider.Client{ID: testClientID, Secret: testClientSecret, AuthMethod: "client_secret_basic", PublicKey: jwk.Key})
	mustSucceed(t, request(t, b, s, logical.UpdateOperation, "config", map[string]any{"token_url": p.TokenURL(), "client_id": testClientID, "client_secret": testClientSecret}))
	mustSucceed(t, request(t, b, s, logical.UpdateOperation, "roles/app", map[string]any{"grant_type": "jwt_bearer", "assertion_key_name": "assert", "assertion_subject": "alice"}))
	tok := readCreds(t, b, s, "app", nil).Data["access_token"].(string)
	if issued, ok := p.Introspect(tok); !ok || issued.Subject != "alice" {
		t.Fatalf("token: %+v active=%v", issued, ok)
	}
	if r := mustSucceed(t, request(t, b, s, logical.ReadOperation, "roles/app", nil)).Data; r["assertion_key_name"] != "assert" || r["assertion_key_set"] != false {
		t.Fatalf("role read: %v", r)
	}
}

func testPEMKey(t testing.TB) string {
	pemText, _ := ecKeyPEM(t)
	return pemText
}

// A role's tokens are bound to the name of its mount key: switching the key obtains a new token.
func TestKeyNameChangeReplacesToken(t *testing.T) {
	p := testprovider.New(t)
	b, s := newTestBackend(t)
	mustSucceed(t, request(t, b, s, logical.UpdateOperation, "keys/a", nil))
	mustSucceed(t, request(t, b, s, logical.UpdateOperation, "keys/b", nil))
	p.AddClient(&testprovider.Client{ID: "keyed", AuthMethod: "private_key_jwt", JWKSURI: jwksServer(t, b, s).URL})
	mustSucceed(t, request(t, b, s, logical.UpdateOperation, "config", map[string]any{"token_url": p.TokenURL()}))
	mustSucceed(t, request(t, b, s, logical.UpdateOperation, "roles/app", map[string]any{"client_id": "keyed", "auth_method": "private_key_jwt", "client_key_name": "a"}))
	first := readCreds(t, b, s, "app", nil).Data["access_token"]
	mustSucceed(t, request(t, b, s, logical.UpdateOperation, "roles/app", map[string]any{"client_key_name": "b"}))
	if again := readCreds(t, b, s, "app", nil).Data["access_token"]; again == first {
		t.Fatal("switching the mount key kept the token obtained with the other")
	}
	b2 := mustSucceed(t, request(t, b, s, logical.ReadOperation, "keys/b", nil)).Data
	if kids := p.AssertionKIDs(); len(kids) != 2 || kids[1] != kidOf(b2["current"]) {
		t.Fatalf("assertion kids %v", kids)
	}
}
