package oauth

import (
	"encoding/json"
	"errors"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/oauth-broker/vault-plugin-secrets-oauth/internal/oauthclient"
)

// Fuzz targets for the parsers of operator input. The seed corpora run as ordinary tests;
// explore with e.g. go test -run XXX -fuzz FuzzValidateEndpointURL -fuzztime 2m .

// checkFieldError asserts err is a fieldError naming field whose echo of the input is clipped.
func checkFieldError(t *testing.T, err error, field, input string) {
	t.Helper()
	var fe *fieldError
	if !errors.As(err, &fe) || fe.field != field {
		t.Fatalf("error %v does not name %s", err, field)
	}
	if len([]rune(input)) > 64 && strings.Contains(err.Error(), input) {
		t.Fatalf("error echoes %d characters of input unclipped", len(input))
	}
}

func FuzzValidateEndpointURL(f *testing.F) {
	for _, s := range []string{
		"https://idp.example.com/oauth2/token", "http://127.0.0.1:8080/token", "http://localhost/token",
		"http://[::1]:9000/t", "http://idp.example.com/token", "https://:443/token", "https:///token",
		"https://user:pw@idp.example.com/", "https://idp.example.com/#frag", "https://idp.example.com:99999/",
		"ftp://idp.example.com/", "javascript:alert(1)", "/token", "HTTPS://IDP.EXAMPLE.COM/token",
		"http://127.0.0.1.nip.io/token", "http://0x7f000001/token", "https://idp.example.com/t?x=1", "",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		err := validateEndpointURL("token_url", raw)
		if err != nil {
			checkFieldError(t, err, "token_url", raw)
			return
		}
		if raw == "" {
			return
		}
		u, perr := url.Parse(raw)
		if perr != nil {
			t.Fatalf("accepted %q, which does not parse: %v", raw, perr)
		}
		switch {
		case u.Hostname() == "":
			t.Fatalf("accepted %q without a host", raw)
		case u.User != nil || u.Fragment != "" || u.Opaque != "":
			t.Fatalf("accepted %q with credentials, a fragment or an opaque part", raw)
		case u.Scheme != "https" && (u.Scheme != "http" || !isLoopback(u.Hostname())):
			t.Fatalf("accepted %q: scheme %q to host %q", raw, u.Scheme, u.Hostname())
		case len(raw) > 2048:
			t.Fatalf("accepted a %d-byte URL", len(raw))
		}
	})
}

// scopeGrammar is RFC 6749 §3.3's scope-token; the plugin bounds it to 1024 bytes.
var scopeGrammar = regexp.MustCompile(`^[\x21\x23-\x5B\x5D-\x7E]+$`)

func FuzzValidScopeToken(f *testing.F) {
	for _, s := range []string{"read", "api://default/.default", "a\"b", `a\b`, "a b", "é", "", "~!#$%&'()*+,-./:;<=>?@[]^_`{|}", strings.Repeat("s", 1025)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if got, want := validScopeToken(s), len(s) <= 1024 && scopeGrammar.MatchString(s); got != want {
			t.Fatalf("validScopeToken(%q) = %v, RFC 6749 says %v", s, got, want)
		}
	})
}

func FuzzParseClaims(f *testing.F) {
	for _, s := range []string{`{"tenant":"t1"}`, `{"n":12345678901234567890,"nested":{"a":[1,2]}}`, `{"iss":"x"}`,
		`{"\u0065xp":1}`, `{"jti":null}`, `null`, `[1]`, `"s"`, ``, `  `, `{"a":1}{"b":2}`, `{"a":1,"a":2}`, `{"sub":1,"SUB":2}`} {
		f.Add(s)
	}
	key := &oauthclient.SigningKey{Key: []byte(hmacKey), Alg: jose.HS256}
	f.Fuzz(func(t *testing.T, text string) {
		claims, err := parseClaims(text)
		if err != nil {
			checkFieldError(t, err, "assertion_claims", text)
			return
		}
		if claims == nil {
			if strings.TrimSpace(text) != "" {
				t.Fatalf("%q accepted as no claims", text)
			}
			return
		}
		for _, c := range reservedClaims {
			if _, ok := claims[c]; ok {
				t.Fatalf("%q sets the reserved claim %q", text, c)
			}
		}
		// What is accepted is stored as JSON and signed into an assertion whose own claims win.
		if _, err := json.Marshal(claims); err != nil {
			t.Fatalf("accepted claims do not marshal: %v", err)
		}
		now := time.Unix(1_700_000_000, 0)
		signed, err := key.SignJWT(oauthclient.Claims{Issuer: "me", Subject: "me", Audience: "aud", TTL: time.Minute, Extra: claims}, now)
		if err != nil {
			t.Fatalf("accepted claims %q do not sign: %v", text, err)
		}
		parsed, err := jwt.ParseSigned(signed, []jose.SignatureAlgorithm{jose.HS256})
		if err != nil {
			t.Fatal(err)
		}
		var std jwt.Claims
		if err := parsed.Claims([]byte(hmacKey), &std); err != nil {
			t.Fatal(err)
		}
		if std.Issuer != "me" || std.Subject != "me" || !std.Audience.Contains("aud") || !std.Expiry.Time().Equal(now.Add(time.Minute)) {
			t.Fatalf("claims %q changed the assertion's own claims: %+v", text, std)
		}
	})
}

func FuzzValidateRoleName(f *testing.F) {
	for _, s := range []string{"app", "a", "my-app_1.prod", "-app", "app-", "a..b", "bad name", "a/b", "rôle", "", strings.Repeat("a", 128), strings.Repeat("a", 129), "a\nb"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		err := validateRoleName(name)
		if err != nil {
			checkFieldError(t, err, "name", name)
			return
		}
		// Accepted names are safe as a storage key segment and in a URL path.
		if name == "" || len(name) > 128 || strings.ContainsAny(name, "/ \t\r\n%?#") || !utf8.ValidString(name) {
			t.Fatalf("accepted role name %q", name)
		}
		if !isAlnum(name[0]) || !isAlnum(name[len(name)-1]) {
			t.Fatalf("accepted role name %q that does not start and end with a letter or digit", name)
		}
		if url.PathEscape(name) != name {
			t.Fatalf("accepted role name %q needs escaping in a path", name)
		}
	})
}

func isAlnum(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
}

func FuzzParseSigningKey(f *testing.F) {
	rsaPEM, _ := rsaKeyPEM(f)
	ecPEM, _ := ecKeyPEM(f)
	for _, seed := range []struct{ key, alg string }{
		{rsaPEM, ""}, {rsaPEM, "PS256"}, {rsaPEM, "ES256"}, {ecPEM, ""}, {ecPEM, "ES384"}, {ecPEM, "HS256"},
		{hmacKey, ""}, {hmacKey, "HS512"}, {hmacKey, "RS256"}, {"short", ""}, {"", ""}, {hmacKey, "none"},
		{"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----", ""},
		{"-----BEGIN EC PRIVATE KEY-----\nMAA=\n-----END EC PRIVATE KEY-----", ""},
		{"-----BEGIN CERTIFICATE-----\nMAA=\n-----END CERTIFICATE-----", ""},
		{ecPEM + ecPEM, ""}, {"-----BEGIN", ""},
	} {
		f.Add(seed.key, seed.alg)
	}
	algs := []jose.SignatureAlgorithm{jose.HS256, jose.HS384, jose.HS512, jose.RS256, jose.RS384, jose.RS512, jose.PS256, jose.PS384, jose.PS512, jose.ES256, jose.ES384, jose.ES512}
	f.Fuzz(func(t *testing.T, keyText, alg string) {
		key, err := oauthclient.ParseSigningKey(keyText, alg, "kid-1")
		if err != nil {
			// A shared secret's error depends on its length, never on its content.
			if !oauthclient.IsPEM(keyText) {
				other, otherErr := oauthclient.ParseSigningKey(strings.Repeat("x", len(keyText)), alg, "kid-1")
				if other != nil || otherErr == nil || otherErr.Error() != err.Error() {
					t.Fatalf("the error for a shared secret depends on its content: %v vs %v", err, otherErr)
				}
			}
			return
		}
		if !slices.Contains(algs, key.Alg) {
			t.Fatalf("accepted alg %q", key.Alg)
		}
		if secret, ok := key.Key.([]byte); ok && len(secret) < 32 {
			t.Fatalf("accepted a %d-byte HMAC secret", len(secret))
		}
		if _, err := key.SignJWT(oauthclient.Claims{Issuer: "i", Subject: "s", Audience: "a", TTL: time.Minute}, time.Now()); err != nil {
			t.Fatalf("accepted key (%s) does not sign: %v", key.Alg, err)
		}
	})
}
