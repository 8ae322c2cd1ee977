package faultproxy

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"syscall"
	"testing"
	"time"
)

// upstream answers every request with a fixed token response.
func upstream(t *testing.T) *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"access_token":"at-1","token_type":"Bearer","expires_in":3600,"refresh_token":"rt-1"}`)
	}))
	t.Cleanup(srv.Close)
	return srv
}

func start(t *testing.T, opts Options) (*Proxy, *http.Client) {
	t.Helper()
	p, err := Start(upstream(t).URL, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	transport := &http.Transport{}
	if opts.TLS {
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM([]byte(p.CAPEM()))
		transport.TLSClientConfig = &tls.Config{RootCAs: pool}
	}
	return p, &http.Client{Transport: transport, Timeout: 5 * time.Second}
}

func post(t *testing.T, c *http.Client, p *Proxy) (*http.Response, string) {
	t.Helper()
	resp, err := c.PostForm(p.URL()+"/token", url.Values{"grant_type": {"client_credentials"}})
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp, string(body)
}

func TestQuirksRewriteTheUpstreamAnswer(t *testing.T) {
	p, c := start(t, Options{TLS: true})
	cases := map[Scenario]func(http.Header, string) bool{
		None:               func(_ http.Header, b string) bool { return strings.Contains(b, `"expires_in":3600`) },
		ExpiresInString:    func(_ http.Header, b string) bool { return strings.Contains(b, `"expires_in":"3600"`) },
		NoExpiresIn:        func(_ http.Header, b string) bool { return !strings.Contains(b, "expires_in") },
		NoTokenType:        func(_ http.Header, b string) bool { return !strings.Contains(b, "token_type") },
		LowercaseTokenType: func(_ http.Header, b string) bool { return strings.Contains(b, `"token_type":"bearer"`) },
		FormEncoded: func(h http.Header, b string) bool {
			v, err := url.ParseQuery(b)
			return err == nil && h.Get("Content-Type") == "application/x-www-form-urlencoded" &&
				v.Get("access_token") == "at-1" && v.Get("expires_in") == "3600" && v.Get("refresh_token") == "rt-1"
		},
	}
	for s, ok := range cases {
		if err := p.SetScenario(s); err != nil {
			t.Fatal(err)
		}
		resp, body := post(t, c, p)
		if resp.StatusCode != http.StatusOK || !ok(resp.Header, body) {
			t.Errorf("%s: %d %s %q", s, resp.StatusCode, resp.Header.Get("Content-Type"), body)
		}
	}
	if st := p.Stats(); st.Forwarded != int64(len(cases)) || st.Requests != st.Forwarded {
		t.Errorf("stats %+v", st)
	}
}

func TestRefuseStopsListeningAndNoneResumesOnTheSamePort(t *testing.T) {
	p, c := start(t, Options{})
	before := p.URL()
	if err := p.SetScenario(Refuse); err != nil {
		t.Fatal(err)
	}
	_, err := c.PostForm(p.URL()+"/token", nil)
	if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("want connection refused, got %v", err)
	}
	if err := p.SetScenario(None); err != nil {
		t.Fatal(err)
	}
	if p.URL() != before {
		t.Fatalf("the proxy moved from %s to %s", before, p.URL())
	}
	if resp, _ := post(t, c, p); resp.StatusCode != http.StatusOK {
		t.Fatalf("after refuse, none answers %d", resp.StatusCode)
	}
}

func TestUntrustedTLSFailsOnTrustAlone(t *testing.T) {
	p, c := start(t, Options{TLS: true})
	if err := p.SetScenario(UntrustedTLS); err != nil {
		t.Fatal(err)
	}
	_, err := c.PostForm(p.URL()+"/token", nil)
	var unknown x509.UnknownAuthorityError
	if !errors.As(err, &unknown) {
		t.Fatalf("want an unknown-authority error, got %v", err)
	}
	plain, _ := start(t, Options{})
	if err := plain.SetScenario(UntrustedTLS); err == nil {
		t.Fatal("a plain-HTTP proxy must refuse the TLS scenario")
	}
}

func TestCloseEndsHangingAnswers(t *testing.T) {
	p, c := start(t, Options{})
	if err := p.SetScenario(Hang); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := c.PostForm(p.URL()+"/token", nil)
		done <- err
	}()
	for p.Stats().Requests == 0 {
		time.Sleep(5 * time.Millisecond)
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err == nil {
		t.Fatal("a hanging request must end in an error when the proxy closes")
	}
}

func TestControlAPI(t *testing.T) {
	p, _ := start(t, Options{TLS: true})
	ctl := httptest.NewServer(p.ControlHandler())
	defer ctl.Close()

	put := func(s string) int {
		req, _ := http.NewRequest(http.MethodPut, ctl.URL+"/_fault?scenario="+s, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if got := put("html_503"); got != http.StatusNoContent {
		t.Fatalf("PUT html_503: %d", got)
	}
	if got := put("nonsense"); got != http.StatusBadRequest {
		t.Fatalf("PUT nonsense: %d", got)
	}
	resp, err := http.Get(ctl.URL + "/_fault")
	if err != nil {
		t.Fatal(err)
	}
	var state struct {
		Stats Stats  `json:"stats"`
		URL   string `json:"url"`
	}
	err = json.NewDecoder(resp.Body).Decode(&state)
	resp.Body.Close()
	if err != nil || state.Stats.Scenario != HTML503 || state.URL != p.URL() {
		t.Fatalf("GET /_fault: %+v %v", state, err)
	}
	resp, err = http.Get(ctl.URL + "/_fault/ca.pem")
	if err != nil {
		t.Fatal(err)
	}
	pemBytes, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(pemBytes) != p.CAPEM() || !strings.HasPrefix(p.CAPEM(), "-----BEGIN CERTIFICATE-----") {
		t.Fatalf("ca.pem: %q", pemBytes)
	}
}

func TestStartRejectsNonLoopbackAddresses(t *testing.T) {
	if _, err := Start("http://127.0.0.1:1", Options{Addr: "0.0.0.0:0"}); err == nil {
		t.Fatal("listening on every interface must be refused")
	}
}

func TestUpstreamPathPrefixIsKept(t *testing.T) {
	paths := make(chan string, 1)
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { paths <- r.URL.Path }))
	defer up.Close()
	p, err := Start(up.URL+"/tenant/oidc", Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := p.Close(); err != nil {
			t.Error(err)
		}
	}()
	resp, err := http.Post(p.URL()+"/token", "application/x-www-form-urlencoded", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if got := <-paths; got != "/tenant/oidc/token" {
		t.Fatalf("forwarded to %q", got)
	}
}

// recordingUpstream answers like upstream and hands each request body it got to bodies.
func recordingUpstream(t *testing.T) (*httptest.Server, chan string) {
	bodies := make(chan string, 16)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		bodies <- string(b)
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"access_token":"at-1","token_type":"Bearer","expires_in":3600}`)
	}))
	t.Cleanup(srv.Close)
	return srv, bodies
}

type answer struct {
	code int
	body string
	err  error
}

// postAsync sends a token request with form in the background.
func postAsync(c *http.Client, p *Proxy, form url.Values) chan answer {
	out := make(chan answer, 1)
	go func() {
		resp, err := c.PostForm(p.URL()+"/token", form)
		if err != nil {
			out <- answer{err: err}
			return
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		out <- answer{code: resp.StatusCode, body: string(b)}
	}()
	return out
}

// holdingProxy starts a proxy to upstream in the Hold scenario, with a client for it.
func holdingProxy(t *testing.T, upstream string) (*Proxy, *http.Client) {
	t.Helper()
	p, err := Start(upstream, Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	if err := p.SetScenario(Hold); err != nil {
		t.Fatal(err)
	}
	return p, &http.Client{Timeout: 10 * time.Second}
}

// waitHeld polls the proxy until it holds n requests.
func waitHeld(t *testing.T, p *Proxy, n int64) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for p.Stats().Held != n {
		if time.Now().After(deadline) {
			t.Fatalf("the proxy holds %d requests, want %d", p.Stats().Held, n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestHoldKeepsRequestsUntilSwitchedAwayThenForwardsThemUnchanged(t *testing.T) {
	up, bodies := recordingUpstream(t)
	p, c := holdingProxy(t, up.URL)
	forms := []url.Values{
		{"grant_type": {"refresh_token"}, "refresh_token": {"rt-a"}},
		{"grant_type": {"client_credentials"}, "scope": {"read write"}},
	}
	answers := []chan answer{postAsync(c, p, forms[0]), postAsync(c, p, forms[1])}
	waitHeld(t, p, 2)
	// Switching to Hold again is no switch away: nothing is released.
	if err := p.SetScenario(Hold); err != nil {
		t.Fatal(err)
	}
	for i, a := range answers {
		select {
		case got := <-a:
			t.Fatalf("request %d was answered while held: %+v", i, got)
		default:
		}
	}
	if st := p.Stats(); st.Forwarded != 0 || len(bodies) != 0 || st.Requests != 2 || st.Scenario != Hold {
		t.Fatalf("while holding: stats %+v, upstream got %d requests", st, len(bodies))
	}

	if err := p.SetScenario(None); err != nil {
		t.Fatal(err)
	}
	for i, a := range answers {
		got := <-a
		if got.err != nil || got.code != http.StatusOK || !strings.Contains(got.body, `"access_token":"at-1"`) {
			t.Errorf("released request %d: %+v", i, got)
		}
	}
	want := map[string]bool{forms[0].Encode(): true, forms[1].Encode(): true}
	for range forms {
		b := <-bodies
		if !want[b] {
			t.Errorf("the upstream got body %q, want one of the bodies sent", b)
		}
		delete(want, b)
	}
	if st := p.Stats(); st.Held != 0 || st.HeldTotal != 2 || st.Forwarded != 2 || st.Requests != 2 {
		t.Errorf("after the release: stats %+v", st)
	}
}

func TestHeldRequestsAreHandledByTheScenarioSwitchedTo(t *testing.T) {
	up, bodies := recordingUpstream(t)
	p, c := holdingProxy(t, up.URL)
	a := postAsync(c, p, url.Values{"grant_type": {"client_credentials"}})
	waitHeld(t, p, 1)
	if err := p.SetScenario(HTML503); err != nil {
		t.Fatal(err)
	}
	got := <-a
	if got.err != nil || got.code != http.StatusServiceUnavailable || !strings.Contains(got.body, "upstream says no") {
		t.Fatalf("a request held and then switched to html_503: %+v", got)
	}
	if len(bodies) != 0 || p.Stats().Forwarded != 0 {
		t.Fatal("a request released into a fault scenario reached the upstream")
	}
}

func TestHeldRequestEndsWhenItsClientGivesUpOrTheProxyCloses(t *testing.T) {
	p, _ := start(t, Options{})
	if err := p.SetScenario(Hold); err != nil {
		t.Fatal(err)
	}
	ctx, giveUp := context.WithCancel(context.Background())
	gaveUp := make(chan error, 1)
	go func() {
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, p.URL()+"/token", strings.NewReader("grant_type=client_credentials"))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
		}
		gaveUp <- err
	}()
	waitHeld(t, p, 1)
	giveUp()
	if err := <-gaveUp; err == nil {
		t.Fatal("a held request was answered")
	}
	waitHeld(t, p, 0)

	a := postAsync(&http.Client{Timeout: 10 * time.Second}, p, nil)
	waitHeld(t, p, 1)
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if got := <-a; got.err == nil {
		t.Fatalf("a held request must end in an error when the proxy closes, got %+v", got)
	}
	if st := p.Stats(); st.Held != 0 || st.HeldTotal != 2 || st.Forwarded != 0 {
		t.Errorf("stats %+v", st)
	}
}

func TestControlAPIAcceptsHoldAndReportsHeld(t *testing.T) {
	p, c := start(t, Options{})
	ctl := httptest.NewServer(p.ControlHandler())
	defer ctl.Close()
	req, _ := http.NewRequest(http.MethodPut, ctl.URL+"/_fault?scenario=hold", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		t.Fatalf("PUT hold: %d", resp.StatusCode)
	}
	a := postAsync(c, p, nil)
	waitHeld(t, p, 1)
	resp, err = http.Get(ctl.URL + "/_fault")
	if err != nil {
		t.Fatal(err)
	}
	var state struct {
		Stats    Stats      `json:"stats"`
		Controls []Scenario `json:"controls"`
	}
	err = json.NewDecoder(resp.Body).Decode(&state)
	resp.Body.Close()
	if err != nil || state.Stats.Scenario != Hold || state.Stats.Held != 1 || len(state.Controls) != 1 || state.Controls[0] != Hold {
		t.Fatalf("GET /_fault while holding: %+v %v", state, err)
	}
	for _, s := range Scenarios {
		if s == Hold {
			t.Fatal("Hold must stay out of Scenarios, which the fault matrices cover one by one")
		}
	}
	if err := p.SetScenario(None); err != nil {
		t.Fatal(err)
	}
	if got := <-a; got.err != nil || got.code != http.StatusOK {
		t.Fatalf("released: %+v", got)
	}
}
