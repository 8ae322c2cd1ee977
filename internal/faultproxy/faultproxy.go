// Package faultproxy is a loopback reverse proxy that sits in front of a real OAuth 2.0 provider
// and, per scenario chosen at run time, answers token requests the way misbehaving providers do:
// 5xx pages, rate limits with Retry-After, silence, refused connections, an untrusted
// certificate, bodies that are not token responses, huge or trickling bodies, rejected grants,
// and the response quirks real providers have. With scenario None it forwards unchanged. The
// control scenario Hold keeps token requests in flight until the test releases them.
//
// Unit tests use it in process (Start); the end-to-end suite can do the same, or run
// cmd/faultproxy and switch scenarios over its control API (ControlHandler).
package faultproxy

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Scenario names one behaviour of the proxy.
type Scenario string

// The scenarios. Faults are answered by the proxy itself (the upstream never sees the request);
// quirks forward to the upstream and rewrite its successful JSON token response.
const (
	None Scenario = "none" // forward unchanged

	HTML500 Scenario = "html_500" // 500 with an HTML error page
	HTML502 Scenario = "html_502" // 502 with an HTML error page
	HTML503 Scenario = "html_503" // 503 with an HTML error page

	RetryAfterSeconds Scenario = "429_retry_after_seconds" // 429, Retry-After: 30
	RetryAfterDate    Scenario = "503_retry_after_date"    // 503, Retry-After: an HTTP-date 2 minutes ahead

	Hang         Scenario = "hang"          // read the request, never answer
	Refuse       Scenario = "refuse"        // stop listening: connections are refused
	UntrustedTLS Scenario = "tls_untrusted" // serve a self-signed certificate (TLS mode only)

	Garbage       Scenario = "garbage"         // 200, application/json, a body that is not JSON
	NoAccessToken Scenario = "no_access_token" // 200, JSON without access_token
	HugeBody      Scenario = "huge_body"       // 200, a JSON body of up to HugeBodyBytes, streamed
	Trickle       Scenario = "trickle"         // 200, a token response sent one byte per TrickleInterval

	InvalidGrant  Scenario = "invalid_grant"  // 400 invalid_grant with error_description
	InvalidClient Scenario = "invalid_client" // 401 invalid_client with error_description

	ExpiresInString    Scenario = "expires_in_string"    // expires_in as a JSON string
	NoExpiresIn        Scenario = "no_expires_in"        // expires_in removed
	NoTokenType        Scenario = "no_token_type"        // token_type removed
	FormEncoded        Scenario = "form_encoded"         // the response re-encoded as application/x-www-form-urlencoded
	LowercaseTokenType Scenario = "lowercase_token_type" // token_type in lower case
)

// Hold is a control scenario, not a fault: the proxy reads each token request in full and holds
// it, unanswered and not forwarded, until the scenario is switched away from Hold. Held requests
// are then handled by the scenario switched to, exactly as if they had just arrived: None
// forwards them upstream unchanged and relays the answer, HTML503 answers them with a 503, Hang
// keeps them hanging, and so on (their connection is already open, so Refuse hangs them like
// Hang and UntrustedTLS forwards them like None). Stats.Held counts the requests held right now,
// so a test can wait until a grant is in flight at the proxy, change something, and then release
// it. A held request ends early only when its client gives up (timeout) or the proxy is closed.
//
// Hold is not in Scenarios, which lists the faults and quirks a provider can show (the fault
// matrices cover each of those); SetScenario and the control API accept it all the same.
const Hold Scenario = "hold"

// Controls lists the control scenarios, which steer when requests are answered rather than how.
var Controls = []Scenario{Hold}

// Scenarios lists every scenario, in the order of the fault list.
var Scenarios = []Scenario{
	None, HTML500, HTML502, HTML503, RetryAfterSeconds, RetryAfterDate, Hang, Refuse, UntrustedTLS,
	Garbage, NoAccessToken, HugeBody, Trickle, InvalidGrant, InvalidClient,
	ExpiresInString, NoExpiresIn, NoTokenType, FormEncoded, LowercaseTokenType,
}

// Quirk reports whether s forwards to the upstream and rewrites its answer.
func (s Scenario) Quirk() bool {
	switch s {
	case ExpiresInString, NoExpiresIn, NoTokenType, FormEncoded, LowercaseTokenType:
		return true
	default:
		return false
	}
}

const (
	// HugeBodyBytes bounds the HugeBody stream: far more than a client should ever read.
	HugeBodyBytes = 64 << 20
	// RetryAfterSecondsValue is the Retry-After of RetryAfterSeconds.
	RetryAfterSecondsValue = 30
	// RetryAfterDateAhead is how far ahead the Retry-After date of RetryAfterDate lies.
	RetryAfterDateAhead = 2 * time.Minute
	// ErrorDescription is the error_description of InvalidGrant and InvalidClient.
	ErrorDescription = "injected by faultproxy"
)

// Options configure a Proxy.
type Options struct {
	// Addr is the loopback address to listen on (default 127.0.0.1:0).
	Addr string
	// TLS serves HTTPS with a certificate issued by the proxy's own CA (see CAPEM).
	TLS bool
	// UpstreamCAPEM, when set, replaces the system roots for an https upstream.
	UpstreamCAPEM string
	// TrickleInterval is the pause between the bytes of Trickle (default 1s).
	TrickleInterval time.Duration
	// ErrorLog receives the proxy's own errors (TLS handshakes, upstream failures); nil drops them.
	ErrorLog *log.Logger
}

// Proxy is a running fault proxy.
type Proxy struct {
	upstream *url.URL
	opts     Options
	rp       *httputil.ReverseProxy
	certs    *certificates

	mu       sync.Mutex
	scenario Scenario
	addr     string
	srv      *http.Server // nil while refusing
	ln       net.Listener
	closed   bool
	done     chan struct{} // closed by Close: ends hanging and trickling answers
	handlers sync.WaitGroup

	// release is closed when the scenario switches away from Hold; non-nil while Hold is on.
	release chan struct{}

	requests  atomic.Int64
	forwarded atomic.Int64
	bodyBytes atomic.Int64
	held      atomic.Int64
	heldTotal atomic.Int64
}

// Stats count what the proxy saw.
type Stats struct {
	Scenario Scenario `json:"scenario"`
	// Requests is every request that reached the proxy, forwarded or not.
	Requests int64 `json:"requests"`
	// Forwarded is the requests passed on to the upstream.
	Forwarded int64 `json:"forwarded"`
	// LastBodyBytes is how much of the last injected body the client accepted before it
	// stopped reading (HugeBody, Trickle).
	LastBodyBytes int64 `json:"last_body_bytes"`
	// Held is the requests the Hold scenario holds right now.
	Held int64 `json:"held"`
	// HeldTotal is every request Hold has held, released or not.
	HeldTotal int64 `json:"held_total"`
}

// Start listens on loopback and proxies to upstream (scheme and host, optionally a path prefix).
func Start(upstream string, opts Options) (*Proxy, error) {
	u, err := url.Parse(upstream)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("upstream %q is not an http(s) URL", upstream)
	}
	if opts.Addr == "" {
		opts.Addr = "127.0.0.1:0"
	}
	if err := requireLoopback(opts.Addr); err != nil {
		return nil, err
	}
	if opts.TrickleInterval <= 0 {
		opts.TrickleInterval = time.Second
	}
	if opts.ErrorLog == nil {
		opts.ErrorLog = log.New(io.Discard, "", 0)
	}
	transport := http.DefaultTransport.(*http.Transport).Clone()
	if opts.UpstreamCAPEM != "" {
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM([]byte(opts.UpstreamCAPEM)) {
			return nil, errors.New("upstream CA holds no PEM certificate")
		}
		transport.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	p := &Proxy{upstream: u, opts: opts, scenario: None, addr: opts.Addr, done: make(chan struct{})}
	p.rp = &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			r.SetURL(u)
			r.Out.Host = u.Host
		},
		Transport:      transport,
		ModifyResponse: p.applyQuirk,
		ErrorLog:       opts.ErrorLog,
	}
	if opts.TLS {
		if p.certs, err = newCertificates(); err != nil {
			return nil, err
		}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if err := p.listenLocked(); err != nil {
		return nil, err
	}
	return p, nil
}

func requireLoopback(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("listen address %q: %v", addr, err)
	}
	if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		return fmt.Errorf("listen address %q is not a loopback address", addr)
	}
	return nil
}

// listenLocked (re)opens the listener on p.addr; after the first start the port is fixed so a
// client's configured URL keeps working across Refuse.
func (p *Proxy) listenLocked() error {
	ln, err := net.Listen("tcp", p.addr)
	if err != nil {
		return err
	}
	p.addr = ln.Addr().String()
	srv := &http.Server{Handler: http.HandlerFunc(p.serve), ErrorLog: p.opts.ErrorLog, ReadHeaderTimeout: 10 * time.Second}
	// A fresh connection per request makes a new scenario (certificate, refusal) apply at once.
	srv.SetKeepAlivesEnabled(false)
	if p.certs != nil {
		srv.TLSConfig = &tls.Config{GetCertificate: p.certificate, MinVersion: tls.VersionTLS12}
		ln = tls.NewListener(ln, srv.TLSConfig)
	}
	p.srv, p.ln = srv, ln
	go func() { _ = srv.Serve(ln) }()
	return nil
}

// stopLocked closes the listener itself, not only through the server: Serve may not have
// started yet, and a listener it has not seen would keep completing handshakes.
func (p *Proxy) stopLocked() error {
	lnErr := p.ln.Close()
	srvErr := p.srv.Close() // closes the listener again once Serve has it
	p.srv, p.ln = nil, nil
	for _, err := range []error{lnErr, srvErr} {
		if err != nil && !errors.Is(err, net.ErrClosed) {
			return err
		}
	}
	return nil
}

// URL is the proxy's base URL, standing for the upstream URL: URL()+"/token" is forwarded to
// upstream+"/token". Configure the token endpoint through it explicitly: an issuer's discovered
// metadata names the upstream's own endpoints.
func (p *Proxy) URL() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	scheme := "http"
	if p.certs != nil {
		scheme = "https"
	}
	return scheme + "://" + p.addr
}

// CAPEM is the CA certificate to trust for the proxy in TLS mode ("" otherwise). The
// UntrustedTLS scenario serves a certificate this CA did not issue.
func (p *Proxy) CAPEM() string {
	if p.certs == nil {
		return ""
	}
	return p.certs.caPEM
}

// Scenario is the current scenario.
func (p *Proxy) Scenario() Scenario {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.scenario
}

// SetScenario switches the proxy's behaviour for the requests that arrive from now on.
func (p *Proxy) SetScenario(s Scenario) error {
	if !known(s) {
		return fmt.Errorf("unknown scenario %q", s)
	}
	if s == UntrustedTLS && p.certs == nil {
		return fmt.Errorf("scenario %s needs the proxy to serve TLS", s)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return errors.New("the proxy is closed")
	}
	switch {
	case s == Refuse && p.srv != nil:
		if err := p.stopLocked(); err != nil {
			return err
		}
	case s != Refuse && p.srv == nil:
		if err := p.listenLocked(); err != nil {
			return fmt.Errorf("listening again on %s: %w", p.addr, err)
		}
	}
	switch {
	case s == Hold && p.scenario != Hold:
		p.release = make(chan struct{})
	case s != Hold && p.scenario == Hold:
		// Held requests go on under s: set it before they look.
		close(p.release)
		p.release = nil
	}
	p.scenario = s
	return nil
}

func known(s Scenario) bool {
	for _, list := range [][]Scenario{Scenarios, Controls} {
		for _, k := range list {
			if k == s {
				return true
			}
		}
	}
	return false
}

// Stats reports what the proxy has seen.
func (p *Proxy) Stats() Stats {
	return Stats{
		Scenario:      p.Scenario(),
		Requests:      p.requests.Load(),
		Forwarded:     p.forwarded.Load(),
		LastBodyBytes: p.bodyBytes.Load(),
		Held:          p.held.Load(),
		HeldTotal:     p.heldTotal.Load(),
	}
}

// Close stops the proxy and waits for the answers in progress (hanging ones included) to end.
func (p *Proxy) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	close(p.done)
	var err error
	if p.srv != nil {
		err = p.stopLocked()
	}
	p.mu.Unlock()
	p.handlers.Wait()
	return err
}

type scenarioKey struct{}

func (p *Proxy) serve(w http.ResponseWriter, r *http.Request) {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		http.Error(w, "proxy closed", http.StatusServiceUnavailable)
		return
	}
	p.handlers.Add(1)
	s, release := p.scenario, p.release
	p.mu.Unlock()
	defer p.handlers.Done()
	p.requests.Add(1)

	if s == Hold {
		if s = p.hold(r, release); s == "" {
			// The client gave up or the proxy closed: drop the connection.
			panic(http.ErrAbortHandler)
		}
	}

	if s == None || s == UntrustedTLS || s.Quirk() {
		// UntrustedTLS acts at the handshake; a client that trusts the certificate anyway is
		// served normally.
		p.forwarded.Add(1)
		p.rp.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), scenarioKey{}, s)))
		return
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(r.Body, 1<<20))
	p.inject(s, w, r)
}

// hold reads the request's body and waits until the scenario switches away from Hold, and
// returns the scenario switched to; "" when the client went away or the proxy closed first.
// The body is put back for whatever handles the request next.
func (p *Proxy) hold(r *http.Request, release chan struct{}) Scenario {
	body, err := io.ReadAll(io.LimitReader(r.Body, maxHeldBody))
	if err != nil {
		return ""
	}
	r.Body = io.NopCloser(io.MultiReader(bytes.NewReader(body), r.Body))
	p.held.Add(1)
	p.heldTotal.Add(1)
	defer p.held.Add(-1)
	for {
		select {
		case <-release:
		case <-r.Context().Done():
			return ""
		case <-p.done:
			return ""
		}
		p.mu.Lock()
		s, next := p.scenario, p.release
		p.mu.Unlock()
		if s != Hold {
			return s
		}
		// Switched away and back to Hold before this request looked: keep holding it.
		release = next
	}
}

// maxHeldBody is how much of a request Hold reads before holding it; the rest stays unread.
const maxHeldBody = 1 << 20

func (p *Proxy) inject(s Scenario, w http.ResponseWriter, r *http.Request) {
	switch s {
	case HTML500, HTML502, HTML503:
		code := map[Scenario]int{HTML500: 500, HTML502: 502, HTML503: 503}[s]
		writeHTML(w, code)
	case RetryAfterSeconds:
		w.Header().Set("Retry-After", fmt.Sprint(RetryAfterSecondsValue))
		writeHTML(w, http.StatusTooManyRequests)
	case RetryAfterDate:
		w.Header().Set("Retry-After", time.Now().Add(RetryAfterDateAhead).UTC().Format(http.TimeFormat))
		writeHTML(w, http.StatusServiceUnavailable)
	case Hang, Refuse:
		// Refuse only reaches here for a connection accepted just before the switch.
		select {
		case <-r.Context().Done():
		case <-p.done:
		}
		// Drop the connection: returning would send an empty 200.
		panic(http.ErrAbortHandler)
	case Garbage:
		writeRaw(w, http.StatusOK, "application/json", "<html><body>Login required</body></html>\x00\xff")
	case NoAccessToken:
		writeRaw(w, http.StatusOK, "application/json", `{"token_type":"Bearer","expires_in":3600,"scope":"read"}`)
	case HugeBody:
		p.streamHuge(w, r)
	case Trickle:
		p.trickle(w, r)
	case InvalidGrant:
		writeOAuthError(w, http.StatusBadRequest, "invalid_grant")
	case InvalidClient:
		w.Header().Set("WWW-Authenticate", `Basic realm="token"`)
		writeOAuthError(w, http.StatusUnauthorized, "invalid_client")
	default:
		// Forwarding scenarios are not injected.
	}
}

func writeHTML(w http.ResponseWriter, code int) {
	text := http.StatusText(code)
	writeRaw(w, code, "text/html; charset=utf-8",
		"<!DOCTYPE html>\n<html><head><title>"+text+"</title></head><body><h1>"+text+"</h1><p>upstream says no</p></body></html>\n")
}

func writeOAuthError(w http.ResponseWriter, code int, oauthCode string) {
	body, _ := json.Marshal(map[string]string{"error": oauthCode, "error_description": ErrorDescription})
	writeRaw(w, code, "application/json", string(body))
}

func writeRaw(w http.ResponseWriter, code int, contentType, body string) {
	w.Header().Set("Content-Type", contentType)
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_, _ = io.WriteString(w, body)
}

// streamHuge sends a JSON token response whose access_token never ends, until the client stops
// reading or HugeBodyBytes are out; LastBodyBytes then tells how much the client took.
func (p *Proxy) streamHuge(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	chunk := bytes.Repeat([]byte("A"), 32<<10)
	written, _ := w.Write([]byte(`{"token_type":"Bearer","access_token":"`))
	for written < HugeBodyBytes && r.Context().Err() == nil && !p.isDone() {
		n, err := w.Write(chunk)
		written += n
		if err != nil {
			break
		}
	}
	p.bodyBytes.Store(int64(written))
}

// trickle sends a complete-looking token response one byte per TrickleInterval.
func (p *Proxy) trickle(w http.ResponseWriter, r *http.Request) {
	body := `{"access_token":"trickled-token","token_type":"Bearer","expires_in":3600}`
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", fmt.Sprint(len(body)))
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	ticker := time.NewTicker(p.opts.TrickleInterval)
	defer ticker.Stop()
	written := 0
	defer func() { p.bodyBytes.Store(int64(written)) }()
	for i := range len(body) {
		if _, err := w.Write([]byte{body[i]}); err != nil || rc.Flush() != nil {
			return
		}
		written++
		select {
		case <-ticker.C:
		case <-r.Context().Done():
			return
		case <-p.done:
			return
		}
	}
}

func (p *Proxy) isDone() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// applyQuirk rewrites a successful JSON token response as the current quirk scenario says.
func (p *Proxy) applyQuirk(resp *http.Response) error {
	s, _ := resp.Request.Context().Value(scenarioKey{}).(Scenario)
	if !s.Quirk() || resp.StatusCode < 200 || resp.StatusCode > 299 {
		return nil
	}
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	resp.Body.Close()
	if err != nil {
		return err
	}
	body, contentType, err := rewriteToken(s, raw)
	if err != nil {
		// Not a JSON object: pass it on untouched.
		body, contentType = raw, resp.Header.Get("Content-Type")
	}
	resp.Body = io.NopCloser(bytes.NewReader(body))
	resp.ContentLength = int64(len(body))
	resp.Header.Set("Content-Length", fmt.Sprint(len(body)))
	resp.Header.Set("Content-Type", contentType)
	return nil
}

func rewriteToken(s Scenario, raw []byte) ([]byte, string, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var tok map[string]any
	if err := dec.Decode(&tok); err != nil || tok == nil {
		return nil, "", errors.New("not a JSON object")
	}
	switch s {
	case ExpiresInString:
		if v, ok := tok["expires_in"]; ok {
			tok["expires_in"] = fmt.Sprint(v)
		}
	case NoExpiresIn:
		delete(tok, "expires_in")
	case NoTokenType:
		delete(tok, "token_type")
	case LowercaseTokenType:
		if v, ok := tok["token_type"].(string); ok {
			tok["token_type"] = strings.ToLower(v)
		}
	case FormEncoded:
		form := url.Values{}
		for k, v := range tok {
			form.Set(k, fmt.Sprint(v))
		}
		return []byte(form.Encode()), "application/x-www-form-urlencoded", nil
	default:
		// Not a quirk: the answer is re-encoded unchanged.
	}
	out, err := json.Marshal(tok)
	return out, "application/json", err
}
