package testprovider

import (
	"crypto/hmac"
	"crypto/sha1" //nolint:gosec // HMAC-SHA1 is RFC 5849 §3.4.2
	"encoding/base64"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"

	"github.com/oauth-broker/vault-plugin-secrets-oauth/internal/oauth1"
)

// OAuth1 is an OAuth 1.0a server (RFC 5849) for unit tests, for one consumer: temporary
// credentials (POST /request_token), an authorization endpoint that approves at once and
// redirects to the callback (GET /authorize), token credentials (POST /access_token) and a
// protected resource (any other path). It checks HMAC-SHA1 signatures and that nonces are unique.
type OAuth1 struct {
	*httptest.Server
	consumerKey, consumerSecret string

	// Intercept, when set, sees every request first; returning true means it answered it.
	Intercept func(http.ResponseWriter, *http.Request) bool

	mu        sync.Mutex
	temporary map[string]*temporaryCredentials
	tokens    map[string]string // token -> token secret
	nonces    map[string]bool
}

type temporaryCredentials struct {
	secret, callback, verifier string
}

// NewOAuth1 starts an OAuth 1.0a server on loopback; it is closed when the test ends.
func NewOAuth1(t interface{ Cleanup(func()) }, consumerKey, consumerSecret string) *OAuth1 {
	s := &OAuth1{
		consumerKey: consumerKey, consumerSecret: consumerSecret,
		temporary: map[string]*temporaryCredentials{}, tokens: map[string]string{}, nonces: map[string]bool{},
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /request_token", s.requestToken)
	mux.HandleFunc("GET /authorize", s.authorize)
	mux.HandleFunc("POST /access_token", s.accessToken)
	mux.HandleFunc("/", s.resource)
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if s.Intercept != nil && s.Intercept(w, r) {
			return
		}
		mux.ServeHTTP(w, r)
	}))
	t.Cleanup(s.Close)
	return s
}

// TokenIssued reports whether token is token credentials the server issued.
func (s *OAuth1) TokenIssued(token string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.tokens[token]
	return ok
}

func (s *OAuth1) requestToken(w http.ResponseWriter, r *http.Request) {
	oauth, ok := s.verify(w, r, func(string) (string, bool) { return "", true })
	if !ok {
		return
	}
	if oauth["oauth_callback"] == "" {
		http.Error(w, "oauth_callback is required", http.StatusBadRequest)
		return
	}
	token, secret := randomToken(), randomToken()
	s.mu.Lock()
	s.temporary[token] = &temporaryCredentials{secret: secret, callback: oauth["oauth_callback"]}
	s.mu.Unlock()
	writeForm(w, url.Values{"oauth_token": {token}, "oauth_token_secret": {secret}, "oauth_callback_confirmed": {"true"}})
}

// authorize approves at once, as the resource owner would (§2.2), and redirects to the callback;
// for "oob" it answers the verifier as text.
func (s *OAuth1) authorize(w http.ResponseWriter, r *http.Request) {
	token := r.URL.Query().Get("oauth_token")
	s.mu.Lock()
	tc := s.temporary[token]
	if tc != nil {
		tc.verifier = randomToken()
	}
	s.mu.Unlock()
	if tc == nil {
		http.Error(w, "unknown oauth_token", http.StatusBadRequest)
		return
	}
	if tc.callback == "oob" {
		_, _ = w.Write([]byte(tc.verifier))
		return
	}
	target, err := url.Parse(tc.callback)
	if err != nil {
		http.Error(w, "bad callback", http.StatusBadRequest)
		return
	}
	q := target.Query()
	q.Set("oauth_token", token)
	q.Set("oauth_verifier", tc.verifier)
	target.RawQuery = q.Encode()
	http.Redirect(w, r, target.String(), http.StatusFound)
}

func (s *OAuth1) accessToken(w http.ResponseWriter, r *http.Request) {
	var used *temporaryCredentials
	oauth, ok := s.verify(w, r, func(token string) (string, bool) {
		s.mu.Lock()
		defer s.mu.Unlock()
		used = s.temporary[token]
		if used == nil {
			return "", false
		}
		return used.secret, true
	})
	if !ok {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if used.verifier == "" || oauth["oauth_verifier"] != used.verifier {
		http.Error(w, "bad oauth_verifier", http.StatusUnauthorized)
		return
	}
	delete(s.temporary, oauth["oauth_token"])
	token, secret := randomToken(), randomToken()
	s.tokens[token] = secret
	writeForm(w, url.Values{"oauth_token": {token}, "oauth_token_secret": {secret}})
}

func (s *OAuth1) resource(w http.ResponseWriter, r *http.Request) {
	if _, ok := s.verify(w, r, func(token string) (string, bool) {
		s.mu.Lock()
		defer s.mu.Unlock()
		secret, ok := s.tokens[token]
		return secret, ok
	}); ok {
		w.WriteHeader(http.StatusNoContent)
	}
}

// verify checks the request's HMAC-SHA1 signature with the consumer secret and the secret that
// tokenSecret gives for its oauth_token; it answers 401 itself when the check fails.
func (s *OAuth1) verify(w http.ResponseWriter, r *http.Request, tokenSecret func(token string) (string, bool)) (map[string]string, bool) {
	oauth := map[string]string{}
	var params []oauth1.Param
	header, found := strings.CutPrefix(r.Header.Get("Authorization"), "OAuth ")
	for _, part := range strings.Split(header, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !found || !ok {
			http.Error(w, "no OAuth Authorization header", http.StatusUnauthorized)
			return nil, false
		}
		k, _ = url.PathUnescape(k)
		v, _ = url.PathUnescape(strings.Trim(v, `"`))
		oauth[k] = v
		params = append(params, oauth1.Param{Name: k, Value: v})
	}
	if r.Header.Get("Content-Type") == "application/x-www-form-urlencoded" {
		if err := r.ParseForm(); err == nil {
			for k, vs := range r.PostForm {
				for _, v := range vs {
					params = append(params, oauth1.Param{Name: k, Value: v})
				}
			}
		}
	}
	secret, known := tokenSecret(oauth["oauth_token"])
	base, err := oauth1.BaseString(r.Method, "http://"+r.Host+r.URL.RequestURI(), params)
	mac := hmac.New(sha1.New, []byte(oauth1.Encode(s.consumerSecret)+"&"+oauth1.Encode(secret)))
	mac.Write([]byte(base))
	s.mu.Lock()
	replayed := s.nonces[oauth["oauth_timestamp"]+"/"+oauth["oauth_nonce"]]
	s.nonces[oauth["oauth_timestamp"]+"/"+oauth["oauth_nonce"]] = true
	s.mu.Unlock()
	switch {
	case err != nil || oauth["oauth_consumer_key"] != s.consumerKey || oauth["oauth_signature_method"] != oauth1.HMACSHA1 || !known:
		http.Error(w, "unknown consumer or token", http.StatusUnauthorized)
	case !hmac.Equal([]byte(oauth["oauth_signature"]), []byte(base64.StdEncoding.EncodeToString(mac.Sum(nil)))):
		http.Error(w, "bad signature", http.StatusUnauthorized)
	case replayed || oauth["oauth_nonce"] == "":
		http.Error(w, "nonce replayed", http.StatusUnauthorized)
	default:
		return oauth, true
	}
	return nil, false
}

func writeForm(w http.ResponseWriter, v url.Values) {
	w.Header().Set("Content-Type", "application/x-www-form-urlencoded")
	_, _ = w.Write([]byte(v.Encode()))
}
