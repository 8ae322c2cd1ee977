package main

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/hashicorp/vault/api"
)

// The exchange phase: cached on-behalf-of token exchanges (exchange/<role>, issue 18) side by side
// with a KV read of an answer of the same size, in alternating turns as in the read phase. The
// subject token is a client_credentials token of the mount's own client, as a service would
// receive one; every measured exchange is of that one subject token, so all but the first are
// answered from the plugin's in-memory cache, which the provider's counters confirm.

const (
	exchangeRole    = "bench-obo"
	subjectRole     = "bench-subject"
	exchangeKVPath  = "bench-exchange"
	exchangeTarget  = "https://api.bench.example"
	tokenExchangeGT = "urn:ietf:params:oauth:grant-type:token-exchange"
)

// exchangePolicy lets the load clients exchange and read the KV secret, and nothing else.
const exchangePolicy = `
path "%[1]s/exchange/*" { capabilities = ["update"] }
path "%[2]s/*"          { capabilities = ["read"] }
`

type exchangeResult struct {
	levels []readLevel // cached exchange, KV
	// Token requests the provider got from the exchanging client during warm-up and measured
	// turns (the first exchange comes before: 1 expected in all).
	providerCalls int64
	exchanges     int
}

func (rep *report) runExchange(ctx context.Context, admin *api.Client, p *provider) error {
	o := rep.opts
	mount := o.exchangeMount
	if err := ensureMount(ctx, admin, mount, &api.MountInput{Type: "oauth"}); err != nil {
		return err
	}
	if err := ensureMount(ctx, admin, o.kvMount, &api.MountInput{Type: "kv", Options: map[string]string{"version": "1"}}); err != nil {
		return err
	}
	id, secret, err := p.registerWith(ctx, map[string]any{"grant_types": []string{"client_credentials", tokenExchangeGT}, "access_token_ttl": 3600})
	if err != nil {
		return err
	}
	for _, w := range []struct {
		path string
		data map[string]any
	}{
		{"config", map[string]any{"issuer": p.issuer, "client_id": id, "client_secret": secret}},
		{"roles/" + subjectRole, map[string]any{"scopes": "read"}},
		{"roles/" + exchangeRole, map[string]any{"grant_type": "token_exchange", "audience": exchangeTarget, "scopes": "read"}},
	} {
		if _, err := admin.Logical().WriteWithContext(ctx, mount+"/"+w.path, w.data); err != nil {
			return fmt.Errorf("writing %s/%s: %w", mount, w.path, err)
		}
	}
	s, err := admin.Logical().ReadWithContext(ctx, mount+"/creds/"+subjectRole)
	if err != nil || s == nil {
		return fmt.Errorf("reading the subject token: %v", err)
	}
	subject := s.Data["access_token"].(string)
	exchangePath := mount + "/exchange/" + exchangeRole
	first, err := admin.Logical().WriteWithContext(ctx, exchangePath, map[string]any{"subject_token": subject})
	if err != nil || first == nil {
		return fmt.Errorf("the first exchange: %v", err)
	}
	if err := writeLookalike(ctx, admin, o.kvMount+"/"+exchangeKVPath, first.Data); err != nil {
		return err
	}
	if err := admin.Sys().PutPolicyWithContext(ctx, "oauth-bench-exchange", fmt.Sprintf(exchangePolicy, mount, o.kvMount)); err != nil {
		return err
	}
	tok, err := admin.Auth().Token().CreateWithContext(ctx, &api.TokenCreateRequest{Policies: []string{"oauth-bench-exchange"}, TTL: "4h", NoDefaultPolicy: true, DisplayName: "oauth-bench-exchange"})
	if err != nil {
		return err
	}
	before, err := p.stats(ctx)
	if err != nil {
		return err
	}

	res := &exchangeResult{}
	rounds := int((o.duration + metricsInterval - 1) / metricsInterval)
	for _, clients := range o.concurrency {
		c, err := newClient(o.vaultAddr, tok.Auth.ClientToken, clients)
		if err != nil {
			return err
		}
		targets := []readTarget{
			{label: "`" + exchangePath + "` (plugin, cached exchange)", mount: mount, op: "update", read: writePath(c, exchangePath, map[string]any{"subject_token": subject}, "access_token")},
			{label: "`" + o.kvMount + "/" + exchangeKVPath + "` (KV v1, built in)", mount: o.kvMount, read: readPath(c, o.kvMount+"/"+exchangeKVPath, "access_token")},
		}
		logf("exchange: %d clients, %d × %s per target", clients, rounds, metricsInterval)
		results, err := measureReads(ctx, admin, targets, clients, rounds, logf)
		if err != nil {
			return err
		}
		res.levels = append(res.levels, readLevel{clients: clients, results: results})
		res.exchanges += len(results[0].lat.ok) + results[0].warmup
	}
	after, err := p.stats(ctx)
	if err != nil {
		return err
	}
	res.providerCalls = after.ByClient[id] - before.ByClient[id]
	rep.exchange = res
	return nil
}

// exchangeWrite exchanges subject at path and requires a token in the answer.
func (r *exchangeResult) markdown(b *strings.Builder) {
	fmt.Fprintf(b, "### Token exchange: cached on-behalf-of exchanges against a KV read, %d s per target in 10 s turns, alternating\n\n",
		int(r.levels[0].results[0].lat.elapsed.Round(time.Second).Seconds()))
	b.WriteString("Each exchange writes the same subject token to `exchange/<role>`: the plugin answers from its in-memory cache. ")
	fmt.Fprintf(b, "The provider received **%d** token requests from the exchanging client over %d successful exchanges (warm-up included).\n\n", r.providerCalls, r.exchanges)
	b.WriteString("| clients | request | reads | errors | reads/s | p50 | p99 | in Vault, mean | storage writes / request | storage reads / request |\n")
	b.WriteString("|--:|---|--:|--:|--:|--:|--:|--:|--:|--:|\n")
	for _, lvl := range r.levels {
		for _, res := range lvl.results {
			fmt.Fprintf(b, "| %d | %s | %d | %d | %.0f | %s | %s | %s | %s | %s |\n",
				lvl.clients, res.target.label, len(res.lat.ok), res.lat.errors, res.lat.rate(),
				ms(res.lat.percentile(0.5)), ms(res.lat.percentile(0.99)), msFloat(meanMS(res.handle)), ratio(res, res.puts), ratio(res, res.gets))
		}
	}
	b.WriteString("\nSide by side (same run, same server, alternating turns):\n\n")
	b.WriteString("| clients | requests/s exchange ÷ KV | p50 exchange ÷ KV | p99 exchange ÷ KV |\n|--:|--:|--:|--:|\n")
	for _, lvl := range r.levels {
		ex, kv := lvl.results[0], lvl.results[1]
		fmt.Fprintf(b, "| %d | **%s** | %s | %s |\n", lvl.clients, times(ex.lat.rate(), kv.lat.rate()),
			timesD(ex.lat.percentile(0.5), kv.lat.percentile(0.5)), timesD(ex.lat.percentile(0.99), kv.lat.percentile(0.99)))
	}
	for _, lvl := range r.levels {
		for _, res := range lvl.results {
			if res.lat.firstErr != nil {
				fmt.Fprintf(b, "- %d concurrent, %s: first error: %v\n", lvl.clients, res.target.label, res.lat.firstErr)
			}
		}
	}
	b.WriteString("\n")
}
