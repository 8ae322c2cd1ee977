package oauthclient

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

// Fuzz targets for what a provider controls: the token response, the error response and
// Retry-After. The seed corpora run as ordinary tests; explore with e.g.
//
//	go test -run XXX -fuzz FuzzTokenResponse -fuzztime 2m ./internal/oauthclient

const fuzzSecret = "fuzz-client-secret-9f8e7d6c5b4a39281706f5e4d3c2b1a0"

// maxErrorBytes bounds Error(): status line, clipped code and description, a short cause.
const maxErrorBytes = 2048

// fixedResponse answers every request with one canned response, in memory.
type fixedResponse struct {
	status int
	header http.Header
	body   []byte
}

func (f fixedResponse) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Body != nil {
		_, _ = io.Copy(io.Discard, req.Body)
		_ = req.Body.Close()
	}
	return &http.Response{
		StatusCode: f.status,
		Status:     strconv.Itoa(f.status) + " " + http.StatusText(f.status),
		Header:     f.header,
		Body:       io.NopCloser(bytes.NewReader(f.body)),
		Request:    req,
	}, nil
}

// exchangeWith performs a client_credentials request answered by resp.
func exchangeWith(resp fixedResponse) (*Token, error) {
	c := &Client{http: &http.Client{Transport: resp, Timeout: 10 * time.Second}, now: time.Now}
	return c.Exchange(context.Background(), TokenRequest{
		TokenURL:  "https://idp.example.com/oauth/token?tenant=t1",
		GrantType: GrantClientCredentials,
		Scopes:    []string{"read"},
		Auth:      ClientAuth{Method: AuthClientSecretBasic, ClientID: "fuzz-client", ClientSecret: fuzzSecret},
	})
}

// checkOutcome holds for every response: a usable token or an *Error that is bounded, single
// line and free of the client secret, never both or neither.
func checkOutcome(t *testing.T, body []byte, tok *Token, err error) *Error {
	t.Helper()
	if (tok == nil) == (err == nil) {
		t.Fatalf("want a token or an error, got %+v and %v", tok, err)
	}
	if tok != nil {
		if tok.AccessToken == "" || tok.TokenType == "" {
			t.Fatalf("token without access_token or token_type: %+v", tok)
		}
		if tok.ExpiresIn < 0 || tok.ExpiresIn > math.MaxInt32*time.Second {
			t.Fatalf("expires_in out of range: %s", tok.ExpiresIn)
		}
		return nil
	}
	var oe *Error
	if !errors.As(err, &oe) {
		t.Fatalf("error is %T, not *Error: %v", err, err)
	}
	msg := oe.Error()
	if len(msg) > maxErrorBytes {
		t.Fatalf("error is %d bytes: provider text is not bounded: %.200q…", len(msg), msg)
	}
	if strings.ContainsAny(msg, "\r\n\x00") {
		t.Fatalf("error holds control characters that could forge log lines: %q", msg)
	}
	if !utf8.ValidString(msg) {
		t.Fatalf("error is not valid UTF-8: %q", msg)
	}
	if strings.Contains(msg, fuzzSecret) && !bytes.Contains(body, []byte(fuzzSecret)) {
		t.Fatalf("error leaks the client secret: %q", msg)
	}
	if strings.Contains(msg, "tenant=t1") {
		t.Fatalf("error repeats the token URL's query: %q", msg)
	}
	return oe
}

func FuzzTokenResponse(f *testing.F) {
	for _, seed := range []struct {
		contentType, body string
	}{
		{"application/json", `{"access_token":"at","token_type":"Bearer","expires_in":3600,"scope":"read"}`},
		{"application/json; charset=utf-8", `{"access_token":"at","token_type":"bearer","expires_in":"3600","refresh_token":"rt","id_token":"a.b.c"}`},
		{"application/json", `{"access_token":"at"}`},
		{"application/json", `{"access_token":"at","expires_in":-5}`},
		{"application/json", `{"access_token":"at","expires_in":99999999999}`},
		{"application/json", `{"access_token":"at","expires_in":"ab"}`},
		{"application/json", `{"access_token":"at","expires_in":"` + strings.Repeat("9", 3000) + `x"}`},
		{"application/json", `{"access_token":"at","expires_in":3600.5}`},
		{"application/json", `{"access_token":"at","expires_in":null,"scope":["a","b"]}`},
		{"application/json", `{"access_token":12}`},
		{"application/json", `{"token_type":"Bearer","expires_in":3600}`},
		{"application/json", `{"error":"invalid_request","error_description":"x"}`},
		{"application/json", `["access_token"]`},
		{"application/json", `{"access_token":"` + strings.Repeat("A", 2000)},
		{"application/json", "<html><body>Login</body></html>"},
		{"application/x-www-form-urlencoded", "access_token=at&token_type=bearer&expires_in=3600&scope=read+write"},
		{"application/x-www-form-urlencoded", "access_token=at&expires_in=12.5&scope=123"},
		{"application/x-www-form-urlencoded", "access_token=%zz"},
		{"text/plain", "access_token=at;token_type=x"},
		{"", ""},
	} {
		f.Add(seed.contentType, []byte(seed.body))
	}
	f.Fuzz(func(t *testing.T, contentType string, body []byte) {
		resp := fixedResponse{status: http.StatusOK, header: http.Header{"Content-Type": {contentType}}, body: body}
		tok, err := exchangeWith(resp)
		if oe := checkOutcome(t, body, tok, err); oe != nil && oe.StatusCode != 0 && oe.StatusCode != http.StatusOK {
			t.Fatalf("a 200 answer reported as HTTP %d", oe.StatusCode)
		}
	})
}

func FuzzErrorResponse(f *testing.F) {
	for _, seed := range []struct {
		status                        int
		contentType, retryAfter, body string
	}{
		{400, "application/json", "", `{"error":"invalid_grant","error_description":"refresh token expired"}`},
		{401, "application/json", "", `{"error":"invalid_client","error_description":"bad secret\r\nFAKE LOG LINE","error_uri":"https://x"}`},
		{400, "application/json", "", `{"error":"` + strings.Repeat("e", 200) + `","error_description":"` + strings.Repeat("d", 1000) + `"}`},
		{400, "application/x-www-form-urlencoded", "", "error=invalid_scope&error_description=no+such+scope"},
		{429, "text/html", "30", "<html>slow down</html>"},
		{503, "text/html", "Wed, 21 Oct 2015 07:28:00 GMT", ""},
		{503, "", "99999999999999999999", ""},
		{429, "", "-3", ""},
		{500, "text/html", "", "<html>oops</html>"},
		{302, "text/html", "", ""},
		{200, "application/json", "", `{"error":"server_error"}`},
		{404, "application/json", "", `{"error":12,"error_description":{"a":1}}`},
	} {
		f.Add(seed.status, seed.contentType, seed.retryAfter, []byte(seed.body))
	}
	f.Fuzz(func(t *testing.T, status int, contentType, retryAfter string, body []byte) {
		if status < 100 || status > 999 {
			return
		}
		header := http.Header{"Content-Type": {contentType}, "Retry-After": {retryAfter}}
		tok, err := exchangeWith(fixedResponse{status: status, header: header, body: body})
		oe := checkOutcome(t, body, tok, err)
		if status >= 200 && status <= 299 {
			return
		}
		if oe == nil {
			t.Fatalf("HTTP %d yielded a token", status)
		}
		if oe.StatusCode != status {
			t.Fatalf("HTTP %d reported as %d", status, oe.StatusCode)
		}
		if oe.RetryAfter < 0 {
			t.Fatalf("negative Retry-After %s from %q", oe.RetryAfter, retryAfter)
		}
		if (status >= 500 || status == http.StatusTooManyRequests) != oe.Temporary() {
			t.Fatalf("HTTP %d: Temporary() = %v", status, oe.Temporary())
		}
		if oe.Code != "" && !strings.Contains(oe.Error(), "error="+strconv.Quote(oe.Code)) {
			t.Fatalf("error %q does not name the provider's error code %q", oe.Error(), oe.Code)
		}
	})
}

func FuzzParseRetryAfter(f *testing.F) {
	now := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	for _, s := range []string{"", "0", "30", " 120 ", "-1", "1e3", "99999999999999999999", "9223372036854775807",
		now.Add(time.Minute).Format(http.TimeFormat), now.Add(-time.Minute).Format(http.TimeFormat),
		"Sunday, 06-Nov-94 08:49:37 GMT", "Sun Nov  6 08:49:37 1994", "soon"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		got := parseRetryAfter(v, now)
		if got < 0 {
			t.Fatalf("parseRetryAfter(%q) = %s, negative", v, got)
		}
		if secs, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64); err == nil && secs >= 0 {
			// Beyond what a Duration holds, the longest whole-second Duration stands in.
			if want := time.Duration(min(secs, math.MaxInt64/int64(time.Second))) * time.Second; got != want {
				t.Fatalf("parseRetryAfter(%q) = %s, want %s", v, got, want)
			}
		}
	})
}
