// Command faultproxy puts the fault proxy (internal/faultproxy) between a client and a real OAuth
// 2.0 provider for end-to-end tests, with a control API on a second loopback port:
//
//	faultproxy -upstream http://127.0.0.1:9000 [-tls -ca-file proxy-ca.pem] [-listen 127.0.0.1:0] [-control 127.0.0.1:0]
//	curl -X PUT 'http://CONTROL/_fault?scenario=html_503'
//
// Once both listeners are up it prints one JSON line, {"proxy_url":..., "control_url":...}, on
// stdout. It stops on SIGINT or SIGTERM.
package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/oauth-broker/vault-plugin-secrets-oauth/internal/faultproxy"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "faultproxy:", err)
		os.Exit(1)
	}
}

func run() (err error) {
	upstream := flag.String("upstream", "", "provider base URL to forward to (required)")
	listen := flag.String("listen", "127.0.0.1:0", "loopback address for the proxied traffic")
	control := flag.String("control", "127.0.0.1:0", "loopback address for the control API")
	useTLS := flag.Bool("tls", false, "serve HTTPS with a certificate from the proxy's own CA")
	caFile := flag.String("ca-file", "", "with -tls: write the proxy's CA certificate (PEM) here")
	upstreamCA := flag.String("upstream-ca", "", "PEM file of CAs to trust for an https upstream")
	trickle := flag.Duration("trickle-interval", time.Second, "pause between the bytes of the trickle scenario")
	flag.Parse()
	if *upstream == "" {
		return fmt.Errorf("-upstream is required")
	}

	opts := faultproxy.Options{Addr: *listen, TLS: *useTLS, TrickleInterval: *trickle, ErrorLog: log.New(os.Stderr, "faultproxy: ", log.LstdFlags)}
	if *upstreamCA != "" {
		pemBytes, err := os.ReadFile(*upstreamCA)
		if err != nil {
			return err
		}
		opts.UpstreamCAPEM = string(pemBytes)
	}
	proxy, err := faultproxy.Start(*upstream, opts)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, proxy.Close()) }()
	if *caFile != "" {
		if proxy.CAPEM() == "" {
			return fmt.Errorf("-ca-file needs -tls")
		}
		if err := os.WriteFile(*caFile, []byte(proxy.CAPEM()), 0o600); err != nil {
			return err
		}
	}

	host, _, err := net.SplitHostPort(*control)
	if err != nil || net.ParseIP(host) == nil || !net.ParseIP(host).IsLoopback() {
		return fmt.Errorf("-control %q is not a loopback address", *control)
	}
	ln, err := net.Listen("tcp", *control)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: proxy.ControlHandler(), ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	defer func() { err = errors.Join(err, srv.Close()) }()

	if err := json.NewEncoder(os.Stdout).Encode(map[string]string{
		"proxy_url":   proxy.URL(),
		"control_url": "http://" + ln.Addr().String(),
	}); err != nil {
		return err
	}

	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGINT, syscall.SIGTERM)
	<-stop
	return nil
}
