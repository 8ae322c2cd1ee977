package oauthclient

import (
	"cmp"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"math"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"golang.org/x/oauth2"
)

// Error is a failed token request, described without any secret: the HTTP status, the RFC 6749
// §5.2 error code and description, or the transport failure.
type Error struct {
	// Request names the request that failed; empty means the token request.
	Request     string
	StatusCode  int
	Code        string
	Description string
	// RetryAfter is the provider's Retry-After (RFC 9110 §10.2.3) on 429 and 503, else zero.
	RetryAfter time.Duration
	// Cause describes a failure that produced no token response (network, TLS, parse).
	Cause string
	// kind classifies a failure without a status; see Kind.
	kind string
}

// Failure kinds without an HTTP status.
const (
	KindTimeout         = "timeout"
	KindTLS             = "tls"
	KindNetwork         = "network"
	KindInvalidResponse = "invalid_response"
	KindOther           = "other"
)

// Kind names the failure for metrics: "http_<status>" when the provider answered, else timeout,
// tls, network, invalid_response or other.
func (e *Error) Kind() string {
	if e.StatusCode != 0 {
		return "http_" + strconv.Itoa(e.StatusCode)
	}
	return cmp.Or(e.kind, KindOther)
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString(cmp.Or(e.Request, "token request") + " failed")
	if e.StatusCode != 0 {
		fmt.Fprintf(&b, ": HTTP %d %s", e.StatusCode, http.StatusText(e.StatusCode))
	}
	if e.Code != "" {
		fmt.Fprintf(&b, ": error=%q", e.Code)
		if e.Description != "" {
			fmt.Fprintf(&b, " error_description=%q", e.Description)
		}
	}
	if e.Cause != "" {
		b.WriteString(": ")
		b.WriteString(e.Cause)
	}
	if e.RetryAfter > 0 {
		fmt.Fprintf(&b, " (retry after %s)", e.RetryAfter)
	}
	return b.String()
}

// InvalidGrant reports that the provider rejected the grant itself (RFC 6749 §5.2): the
// credential presented (password, refresh token, assertion) is no longer good.
func (e *Error) InvalidGrant() bool { return e.Code == "invalid_grant" }

// Temporary reports whether trying again later may succeed: transport failures, 5xx and 429.
func (e *Error) Temporary() bool {
	return e.StatusCode == 0 && e.Code == "" || e.StatusCode >= 500 || e.StatusCode == http.StatusTooManyRequests
}

// maxDescription bounds what is kept of a provider's error_description.
const maxDescription = 300

func toError(err error, tokenURL string) *Error {
	var re *oauth2.RetrieveError
	if errors.As(err, &re) {
		out := &Error{Code: clip(re.ErrorCode, 64), Description: clip(re.ErrorDescription, maxDescription)}
		if re.Response != nil {
			out.setStatus(re.Response)
		}
		if out.Code == "" && out.StatusCode >= 200 && out.StatusCode < 300 {
			out.Cause = "provider answered with an error it did not name"
		}
		return out
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		kind, cause := transportCause(ue, tokenURL)
		return &Error{Cause: cause, kind: kind}
	}
	// x/oauth2 flattens a body read cut short by the client's timeout (a trickling provider)
	// into text, with or without net/http's "(Client.Timeout ...)" note.
	if msg := err.Error(); strings.Contains(msg, "Client.Timeout") || strings.Contains(msg, context.DeadlineExceeded.Error()) {
		return &Error{Cause: fmt.Sprintf("no answer from %s in time", hostOf(tokenURL)), kind: KindTimeout}
	}
	// x/oauth2's own messages: unparsable body or missing access_token. A JSON error can quote
	// a provider-sent value of any length (a bad expires_in), so they are clipped.
	return &Error{Cause: "invalid token response: " + clip(strings.TrimPrefix(err.Error(), "oauth2: "), maxDescription), kind: KindInvalidResponse}
}

// setStatus records the HTTP status and, where RFC 9110 allows one, the Retry-After.
func (e *Error) setStatus(resp *http.Response) {
	e.StatusCode = resp.StatusCode
	if resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode == http.StatusServiceUnavailable {
		e.RetryAfter = parseRetryAfter(resp.Header.Get("Retry-After"), time.Now())
	}
}

// transportCause describes a request that got no HTTP answer, and classifies it.
func transportCause(ue *url.Error, tokenURL string) (kind, cause string) {
	target := hostOf(tokenURL)
	var netErr net.Error
	var certErr *tls.CertificateVerificationError
	var authorityErr x509.UnknownAuthorityError
	var hostErr x509.HostnameError
	switch {
	case errors.Is(ue.Err, context.DeadlineExceeded) || (errors.As(ue.Err, &netErr) && netErr.Timeout()):
		return KindTimeout, fmt.Sprintf("no answer from %s in time", target)
	case errors.Is(ue.Err, context.Canceled):
		return KindOther, fmt.Sprintf("request to %s was cancelled", target)
	case errors.As(ue.Err, &certErr), errors.As(ue.Err, &authorityErr), errors.As(ue.Err, &hostErr):
		return KindTLS, fmt.Sprintf("cannot reach %s: %v", target, ue.Err)
	}
	// The inner error names the operation and address (connection refused, DNS).
	return KindNetwork, fmt.Sprintf("cannot reach %s: %v", target, ue.Err)
}

func parseRetryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if secs, err := strconv.Atoi(v); err == nil {
		if secs < 0 {
			return 0
		}
		// Clamp rather than overflow into a negative or arbitrary delay.
		return time.Duration(min(secs, math.MaxInt64/int(time.Second))) * time.Second
	}
	if at, err := http.ParseTime(v); err == nil && at.After(now) {
		return at.Sub(now).Round(time.Second)
	}
	return 0
}

// clip bounds provider-controlled text and drops control characters so it cannot forge log lines.
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
