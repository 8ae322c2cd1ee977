package oauth

import (
	"crypto"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1" //nolint:gosec // the signature methods under test
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"

	"github.com/oauth-broker/vault-plugin-secrets-oauth/internal/oauth1"
)

const (
	testConsumerSecret = "consumer-secret-j8Hk2"
	testTokenSecret    = "token-secret-Qw9zL"
)

// oauth1Role writes role "tw" as an oauth1 role with the given extra fields; no config needed.
func oauth1Role(t *testing.T, extra map[string]any) (*backend, *faultyStorage) {
	t.Helper()
	b, s := newTestBackend(t)
	role := map[string]any{
		"grant_type": "oauth1", "consumer_key": "ck-123", "consumer_secret": testConsumerSecret,
		"token": "tok-456", "token_secret": testTokenSecret,
	}
	for k, v := range extra {
		role[k] = v
	}
	mustSucceed(t, request(t, b, s, logical.UpdateOperation, "roles/tw", role))
	return b, s
}

// oauthHeader decodes the parameters of an OAuth Authorization header (RFC 5849 §3.5.1).
func oauthHeader(t *testing.T, h string) map[string]string {
	t.Helper()
	if !strings.HasPrefix(h, "OAuth ") {
		t.Fatalf("header %q", h)
	}
	out := map[string]string{}
	for _, part := range strings.Split(strings.TrimPrefix(h, "OAuth "), ", ") {
		k, v, _ := strings.Cut(part, "=")
		v, err := url.PathUnescape(strings.Trim(v, `"`))
		if err != nil {
			t.Fatal(err)
		}
		out[k] = v
	}
	return out
}

// signedBase is the base string the header's parameters and the request make.
func signedBase(t *testing.T, method, rawURL string, params []oauth1.Param, header map[string]string) string {
	t.Helper()
	for k, v := range header {
		params = append(params, oauth1.Param{Name: k, Value: v})
	}
	base, err := oauth1.BaseString(method, rawURL, params)
	if err != nil {
		t.Fatal(err)
	}
	return base
}

func TestOAuth1SignHMACSHA1(t *testing.T) {
	b, s := oauth1Role(t, nil)
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	clockOf(b).Pin(now)
	const target = "https://api.example.com/1.1/statuses/update.json?include_entities=true"
	resp := mustSucceed(t, request(t, b, s, logical.UpdateOperation, "sign/tw", map[string]any{
		"method": "POST", "url": target, "params": []any{"status=Hello Ladies + Gentlemen", "a=2", "a=1", "empty="},
	}))
	h := oauthHeader(t, resp.Data["authorization"].(string))
	if h["oauth_consumer_key"] != "ck-123" || h["oauth_token"] != "tok-456" || h["oauth_signature_method"] != "HMAC-SHA1" ||
		h["oauth_timestamp"] != "1772366400" || resp.Data["oauth_timestamp"] != "1772366400" || h["oauth_nonce"] != resp.Data["oauth_nonce"] {
		t.Fatalf("header %v, data %v", h, resp.Data)
	}
	sig := h["oauth_signature"]
	delete(h, "oauth_signature")
	base := signedBase(t, "POST", target, []oauth1.Param{{Name: "status", Value: "Hello Ladies + Gentlemen"}, {Name: "a", Value: "2"}, {Name: "a", Value: "1"}, {Name: "empty"}}, h)
	mac := hmac.New(sha1.New, []byte(testConsumerSecret+"&"+testTokenSecret))
	mac.Write([]byte(base))
	if want := base64.StdEncoding.EncodeToString(mac.Sum(nil)); sig != want {
		t.Fatalf("signature %s, want %s over %s", sig, want, base)
	}
	again := mustSucceed(t, request(t, b, s, logical.UpdateOperation, "sign/tw", map[string]any{"url": target}))
	if again.Data["oauth_nonce"] == resp.Data["oauth_nonce"] {
		t.Fatal("two signatures share a nonce")
	}
}

func TestOAuth1SignRSASHA1AndBodyHash(t *testing.T) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	der, _ := x509.MarshalPKCS8PrivateKey(key)
	keyPEM := string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
	b, s := oauth1Role(t, map[string]any{"signature_method": "RSA-SHA1", "consumer_secret": "", "consumer_private_key": keyPEM})
	body := sha1.Sum([]byte(`{"a":1}`)) //nolint:gosec // oauth_body_hash of RSA-SHA1
	bodyHash := base64.StdEncoding.EncodeToString(body[:])
	const target = "http://api.example.com:8080/x"
	resp := mustSucceed(t, request(t, b, s, logical.UpdateOperation, "sign/tw", map[string]any{"method": "PUT", "url": target, "body_hash": bodyHash}))
	h := oauthHeader(t, resp.Data["authorization"].(string))
	if h["oauth_body_hash"] != bodyHash {
		t.Fatalf("oauth_body_hash %q", h["oauth_body_hash"])
	}
	sig, _ := base64.StdEncoding.DecodeString(h["oauth_signature"])
	delete(h, "oauth_signature")
	digest := sha1.Sum([]byte(signedBase(t, "PUT", target, nil, h))) //nolint:gosec // RSA-SHA1
	if err := rsa.VerifyPKCS1v15(&key.PublicKey, crypto.SHA1, digest[:], sig); err != nil {
		t.Fatalf("RSA-SHA1 signature does not verify: %v", err)
	}
	assertNoSecrets(t, request(t, b, s, logical.ReadOperation, "roles/tw", nil), "BEGIN PRIVATE KEY", keyPEM[40:80], testTokenSecret)

	mustFailNaming(t, request(t, b, s, logical.UpdateOperation, "sign/tw", map[string]any{"url": target, "body_hash": "c2hvcnQ="}), "body_hash")
}

func TestOAuth1PlaintextOnlyOverHTTPS(t *testing.T) {
	b, s := oauth1Role(t, map[string]any{"signature_method": "PLAINTEXT"})
	mustFailNaming(t, request(t, b, s, logical.UpdateOperation, "sign/tw", map[string]any{"url": "http://api.example.com/x"}), "url")
	resp := mustSucceed(t, request(t, b, s, logical.UpdateOperation, "sign/tw", map[string]any{"url": "https://api.example.com/x"}))
	if h := oauthHeader(t, resp.Data["authorization"].(string)); h["oauth_signature"] != testConsumerSecret+"&"+testTokenSecret {
		t.Fatalf("PLAINTEXT signature %q", h["oauth_signature"])
	}
}

func TestOAuth1RoleReadShowsNoSecrets(t *testing.T) {
	b, s := oauth1Role(t, nil)
	resp := mustSucceed(t, request(t, b, s, logical.ReadOperation, "roles/tw", nil))
	assertNoSecrets(t, resp, testConsumerSecret, testTokenSecret, "tok-456")
	for field, want := range map[string]any{"grant_type": "oauth1", "consumer_key": "ck-123", "signature_method": "HMAC-SHA1", "consumer_secret_set": true, "token_set": true, "token_secret_set": true, "consumer_private_key_set": false} {
		if resp.Data[field] != want {
			t.Errorf("%s = %v, want %v", field, resp.Data[field], want)
		}
	}
}

func TestOAuth1RoleHasNoTokenToReadAndIsNeverRefreshed(t *testing.T) {
	p := newProviderWithClient(t)
	b, s := configured(t, p)
	mustSucceed(t, request(t, b, s, logical.DeleteOperation, "roles/app", nil))
	mustSucceed(t, request(t, b, s, logical.UpdateOperation, "roles/tw", map[string]any{
		"grant_type": "oauth1", "consumer_key": "ck", "consumer_secret": testConsumerSecret, "token": "t", "token_secret": testTokenSecret,
	}))
	for _, op := range []struct {
		op   logical.Operation
		path string
	}{{logical.ReadOperation, "creds/tw"}, {logical.UpdateOperation, "rotate/tw"}} {
		resp := request(t, b, s, op.op, op.path, nil)
		mustFailNaming(t, resp, "sign/tw")
	}
	before := p.Requests()
	clockOf(b).Shift(48 * time.Hour)
	if err := b.refreshDue(t.Context(), s); err != nil {
		t.Fatal(err)
	}
	if p.Requests() != before {
		t.Fatalf("the refresher sent %d token requests", p.Requests()-before)
	}
	status := mustSucceed(t, request(t, b, s, logical.ReadOperation, "roles/tw/status", nil))
	if status.Data["last_error"] != "" || status.Data["failures"] != int64(0) {
		t.Fatalf("status %v", status.Data)
	}
}

func TestOAuth1RoleAndSignRefuseBadInput(t *testing.T) {
	b, s := newTestBackend(t)
	for _, c := range []struct {
		field string
		data  map[string]any
	}{
		{"consumer_key", map[string]any{"grant_type": "oauth1", "consumer_secret": "x", "token": "t"}},
		{"consumer_secret", map[string]any{"grant_type": "oauth1", "consumer_key": "k", "token": "t"}},
		{"token", map[string]any{"grant_type": "oauth1", "consumer_key": "k", "consumer_secret": "x"}},
		{"signature_method", map[string]any{"grant_type": "oauth1", "consumer_key": "k", "consumer_secret": "x", "token": "t", "signature_method": "HMAC-MD5"}},
		{"consumer_private_key", map[string]any{"grant_type": "oauth1", "consumer_key": "k", "token": "t", "signature_method": "RSA-SHA1", "consumer_private_key": "not a key"}},
		{"dpop", map[string]any{"grant_type": "oauth1", "consumer_key": "k", "consumer_secret": "x", "token": "t", "dpop": true}},
		{"consumer_key", map[string]any{"grant_type": "client_credentials", "consumer_key": "k"}},
	} {
		mustFailNaming(t, request(t, b, s, logical.UpdateOperation, "roles/bad", c.data), c.field)
	}
	if resp := request(t, b, s, logical.ReadOperation, "roles/bad", nil); resp != nil {
		t.Fatalf("a refused role was stored: %v", resp.Data)
	}

	b, s = oauth1Role(t, nil)
	for _, c := range []struct {
		field string
		data  map[string]any
	}{
		{"url", map[string]any{"url": "ftp://example.com/"}},
		{"url", map[string]any{"url": "/relative"}},
		{"url", map[string]any{"url": "https://user:pw@example.com/"}},
		{"url", map[string]any{"url": "https://example.com/?a=1;b=2"}},
		{"method", map[string]any{"url": "https://example.com/", "method": "GE T"}},
		{"params", map[string]any{"url": "https://example.com/", "params": "oauth_token=x"}},
		{"params", map[string]any{"url": "https://example.com/", "params": "=x"}},
		{"nonce", map[string]any{"url": "https://example.com/", "nonce": "n"}},
		{"body_hash", map[string]any{"url": "https://example.com/", "body_hash": "not base64!"}},
	} {
		resp := request(t, b, s, logical.UpdateOperation, "sign/tw", c.data)
		mustFailNaming(t, resp, c.field)
		assertNoSecrets(t, resp, testConsumerSecret, testTokenSecret)
	}
}

func TestSignOnBearerRolePointsToCreds(t *testing.T) {
	p := newProviderWithClient(t)
	b, s := configured(t, p)
	resp := request(t, b, s, logical.UpdateOperation, "sign/app", map[string]any{"url": "https://api.example.com/"})
	mustFailNaming(t, resp, "creds/app")
	mustFailNaming(t, request(t, b, s, logical.UpdateOperation, "sign/nope", map[string]any{"url": "https://api.example.com/"}), "nope")
}

// assertNoSecrets fails if any of the secrets appears anywhere in resp.
func assertNoSecrets(t *testing.T, resp *logical.Response, secrets ...string) {
	t.Helper()
	buf, _ := json.Marshal(resp)
	text := string(buf)
	if resp != nil && resp.IsError() {
		text += resp.Error().Error()
	}
	for _, secret := range secrets {
		if strings.Contains(text, secret) {
			t.Fatalf("a secret appears in %s", text)
		}
	}
}
