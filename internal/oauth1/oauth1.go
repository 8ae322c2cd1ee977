// Package oauth1 signs requests with OAuth 1.0a (RFC 5849) and the oauth_body_hash extension.
// It knows nothing of Vault: it turns credentials and a described request into the
// Authorization header of that request.
package oauth1

import (
	"context"
	"crypto"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1" //nolint:gosec // RFC 5849 §3.4.2 and §3.4.3 define HMAC-SHA1 and RSA-SHA1.
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"hash"
	"io"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Signature methods (RFC 5849 §3.4; HMAC-SHA256 as the providers that moved on from SHA-1 name it).
const (
	HMACSHA1   = "HMAC-SHA1"
	HMACSHA256 = "HMAC-SHA256"
	RSASHA1    = "RSA-SHA1"
	Plaintext  = "PLAINTEXT"
)

// Methods lists the signature methods, default first.
var Methods = []string{HMACSHA1, HMACSHA256, RSASHA1, Plaintext}

// Credentials sign requests: the client's (consumer) and, once there is one, the token's.
type Credentials struct {
	ConsumerKey    string
	ConsumerSecret string
	// PrivateKey signs RSA-SHA1 requests.
	PrivateKey  *rsa.PrivateKey
	Token       string
	TokenSecret string
	Method      string
}

// Param is one request parameter, decoded. A name may repeat.
type Param struct{ Name, Value string }

// Request describes the request to sign.
type Request struct {
	Method string
	// URL is the request URL; the parameters of its query take part in the signature.
	URL string
	// Params are the other parameters that take part: those of a form-encoded body.
	Params []Param
	// BodyHash is the oauth_body_hash of a body that is not form-encoded (base64 of its digest).
	BodyHash string
	// Protocol adds protocol parameters of the three-legged flow (oauth_callback, oauth_verifier).
	Protocol []Param
	// Nonce is random when empty; Timestamp is seconds since the epoch.
	Nonce     string
	Timestamp int64
}

// Signed is the outcome: the Authorization header value and what went into it.
type Signed struct {
	Authorization string
	Nonce         string
	Timestamp     string
	BaseString    string
}

// Sign computes the request's signature (RFC 5849 §3.4) and its Authorization header (§3.5.1).
func Sign(c Credentials, r Request) (*Signed, error) {
	method := c.Method
	if method == "" {
		method = HMACSHA1
	}
	if !slices.Contains(Methods, method) {
		return nil, fmt.Errorf("signature method %q is not supported", method)
	}
	nonce := r.Nonce
	if nonce == "" {
		var err error
		if nonce, err = newNonce(); err != nil {
			return nil, err
		}
	}
	timestamp := strconv.FormatInt(r.Timestamp, 10)
	protocol := []Param{
		{"oauth_consumer_key", c.ConsumerKey},
		{"oauth_nonce", nonce},
		{"oauth_signature_method", method},
		{"oauth_timestamp", timestamp},
		{"oauth_version", "1.0"},
	}
	if c.Token != "" {
		protocol = append(protocol, Param{"oauth_token", c.Token})
	}
	if r.BodyHash != "" {
		protocol = append(protocol, Param{"oauth_body_hash", r.BodyHash})
	}
	protocol = append(protocol, r.Protocol...)

	params := append(slices.Clone(r.Params), protocol...)
	base, err := BaseString(r.Method, r.URL, params)
	if err != nil {
		return nil, err
	}
	sig, err := signature(c, method, base)
	if err != nil {
		return nil, err
	}
	protocol = append(protocol, Param{"oauth_signature", sig})
	slices.SortFunc(protocol, func(a, b Param) int { return strings.Compare(a.Name, b.Name) })
	pairs := make([]string, len(protocol))
	for i, p := range protocol {
		pairs[i] = Encode(p.Name) + `="` + Encode(p.Value) + `"`
	}
	return &Signed{Authorization: "OAuth " + strings.Join(pairs, ", "), Nonce: nonce, Timestamp: timestamp, BaseString: base}, nil
}

// signature is §3.4.2 (HMAC), §3.4.3 (RSA-SHA1) or §3.4.4 (PLAINTEXT) over the base string.
func signature(c Credentials, method, base string) (string, error) {
	key := Encode(c.ConsumerSecret) + "&" + Encode(c.TokenSecret)
	switch method {
	case HMACSHA1:
		return macOf(sha1.New, key, base), nil
	case HMACSHA256:
		return macOf(sha256.New, key, base), nil
	case RSASHA1:
		if c.PrivateKey == nil {
			return "", errors.New("RSA-SHA1 needs a private key")
		}
		sum := sha1.Sum([]byte(base)) //nolint:gosec // RSA-SHA1 is RFC 5849 §3.4.3.
		sig, err := rsa.SignPKCS1v15(nil, c.PrivateKey, crypto.SHA1, sum[:])
		if err != nil {
			return "", err
		}
		return base64.StdEncoding.EncodeToString(sig), nil
	default:
		return key, nil
	}
}

func macOf(h func() hash.Hash, key, message string) string {
	mac := hmac.New(h, []byte(key))
	mac.Write([]byte(message))
	return base64.StdEncoding.EncodeToString(mac.Sum(nil))
}

// BodyHashSize is the digest size oauth_body_hash has under a signature method: the extension
// hashes the body with the signature method's hash, and PLAINTEXT has none (0).
func BodyHashSize(method string) int {
	switch method {
	case HMACSHA256:
		return sha256.Size
	case Plaintext:
		return 0
	default:
		return sha1.Size
	}
}

// BaseString is the signature base string (§3.4.1.1) of a request with params taking part besides
// its URL's query parameters. oauth_signature, if among them, is left out (§3.4.1.3.1).
func BaseString(method, rawURL string, params []Param) (string, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return "", fmt.Errorf("the URL does not parse: %w", err)
	}
	uri, err := BaseStringURI(u)
	if err != nil {
		return "", err
	}
	query, err := url.ParseQuery(u.RawQuery)
	if err != nil {
		return "", fmt.Errorf("the URL's query does not parse as name=value pairs: %w", err)
	}
	all := slices.Clone(params)
	for name, values := range query {
		for _, v := range values {
			all = append(all, Param{name, v})
		}
	}
	return strings.ToUpper(method) + "&" + Encode(uri) + "&" + Encode(NormalizeParameters(all)), nil
}

var defaultPorts = map[string]string{"http": "80", "https": "443"}

// BaseStringURI is §3.4.1.2: scheme and host in lower case, the port only when it is not the
// scheme's default, the path (at least "/"), no query or fragment.
func BaseStringURI(u *url.URL) (string, error) {
	scheme := strings.ToLower(u.Scheme)
	if scheme != "http" && scheme != "https" {
		return "", fmt.Errorf("the URL must be absolute http or https, not %q", u.Scheme)
	}
	host := strings.ToLower(u.Hostname())
	if host == "" {
		return "", errors.New("the URL has no host")
	}
	if strings.Contains(host, ":") {
		host = "[" + host + "]"
	}
	if port := u.Port(); port != "" && port != defaultPorts[scheme] {
		host = net.JoinHostPort(strings.Trim(host, "[]"), port)
	}
	path := u.EscapedPath()
	if path == "" {
		path = "/"
	}
	return scheme + "://" + host + path, nil
}

// NormalizeParameters is §3.4.1.3.2: names and values encoded, sorted by name and then value,
// joined as name=value with "&". oauth_signature does not take part.
func NormalizeParameters(params []Param) string {
	encoded := make([]Param, 0, len(params))
	for _, p := range params {
		if p.Name != "oauth_signature" {
			encoded = append(encoded, Param{Encode(p.Name), Encode(p.Value)})
		}
	}
	slices.SortFunc(encoded, func(a, b Param) int {
		if c := strings.Compare(a.Name, b.Name); c != 0 {
			return c
		}
		return strings.Compare(a.Value, b.Value)
	})
	pairs := make([]string, len(encoded))
	for i, p := range encoded {
		pairs[i] = p.Name + "=" + p.Value
	}
	return strings.Join(pairs, "&")
}

// Encode is §3.6: every byte but the unreserved characters of RFC 3986 as %XX, upper-case hex.
func Encode(s string) string {
	var b strings.Builder
	b.Grow(len(s))
	for i := 0; i < len(s); i++ {
		c := s[i]
		if 'A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-' || c == '.' || c == '_' || c == '~' {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('%')
		b.WriteByte("0123456789ABCDEF"[c>>4])
		b.WriteByte("0123456789ABCDEF"[c&15])
	}
	return b.String()
}

// newNonce is 128 random bits, base64url: unique per request (§3.3).
func newNonce() (string, error) {
	var buf [16]byte
	if _, err := rand.Read(buf[:]); err != nil {
		return "", err
	}
	return base64.RawURLEncoding.EncodeToString(buf[:]), nil
}

// maxResponseBytes caps what is read of a credentials response; one is a few hundred bytes.
const maxResponseBytes = 64 << 10

// Obtain performs a request of the three-legged flow (§2.1 temporary credentials, §2.3 token
// credentials): a POST to endpoint signed with c (and protocol, such as oauth_callback or
// oauth_verifier), whose form-encoded answer holds oauth_token and oauth_token_secret. Errors
// carry no secret: the status and the start of the answer only.
func Obtain(ctx context.Context, hc *http.Client, endpoint string, c Credentials, protocol []Param, now time.Time) (token, secret string, answer url.Values, err error) {
	signed, err := Sign(c, Request{Method: http.MethodPost, URL: endpoint, Protocol: protocol, Timestamp: now.Unix()})
	if err != nil {
		return "", "", nil, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, endpoint, strings.NewReader(""))
	if err != nil {
		return "", "", nil, err
	}
	req.Header.Set("Authorization", signed.Authorization)
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := hc.Do(req)
	if err != nil {
		return "", "", nil, fmt.Errorf("POST %s: %w", hostOf(endpoint), err)
	}
	defer func() { _ = resp.Body.Close() }()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBytes))
	if err != nil {
		return "", "", nil, fmt.Errorf("reading the answer of %s: %w", hostOf(endpoint), err)
	}
	if resp.StatusCode != http.StatusOK {
		return "", "", nil, fmt.Errorf("%s answered HTTP %d: %s", hostOf(endpoint), resp.StatusCode, clip(string(body), 200))
	}
	answer, err = url.ParseQuery(string(body))
	if err != nil {
		return "", "", nil, fmt.Errorf("%s answered something that is not form-encoded", hostOf(endpoint))
	}
	token, secret = answer.Get("oauth_token"), answer.Get("oauth_token_secret")
	if token == "" || secret == "" {
		return "", "", nil, fmt.Errorf("%s answered without oauth_token or oauth_token_secret", hostOf(endpoint))
	}
	return token, secret, answer, nil
}

// hostOf names an endpoint by scheme and host, so that an error never repeats a query.
func hostOf(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "the endpoint"
	}
	return u.Scheme + "://" + u.Host
}

// clip bounds server-sent text and drops control characters so it cannot forge log lines.
func clip(s string, n int) string {
	s = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return ' '
		}
		return r
	}, s)
	if r := []rune(s); len(r) > n {
		return string(r[:n]) + "…"
	}
	return s
}
