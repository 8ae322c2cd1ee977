package main

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/hashicorp/vault/api"
)

// The sign phase: sign/<role> for an OAuth 1.0a role (HMAC-SHA1) and a DPoP role, against a KV-v1
// read, in alternating turns like the read phase.
const (
	oauth1Role = "bench-oauth1"
	dpopRole   = "bench-dpop"
	signURL    = "https://api.example.com/1.1/statuses/home_timeline.json?count=5&include_entities=true"
)

const signerPolicy = `
path "%[1]s/sign/*" { capabilities = ["update"] }
path "%[2]s/*"      { capabilities = ["read"] }
`

// signLevel is the sign phase at one number of concurrent clients.
type signLevel struct {
	clients int
	results []*readResult // oauth1 sign, DPoP sign, KV
}

// writePath writes data to path and requires keys in the answer's data.
func writePath(c *api.Client, path string, data map[string]any, keys ...string) reader {
	return func(ctx context.Context) error {
		s, err := c.Logical().WriteWithContext(ctx, path, data)
		if err != nil {
			return err
		}
		for _, key := range keys {
			if s == nil || s.Data[key] == nil {
				return fmt.Errorf("write %s: no %q in the answer", path, key)
			}
		}
		return nil
	}
}

func (rep *report) runSigns(ctx context.Context, admin *api.Client) error {
	o := rep.opts
	if _, err := admin.Logical().WriteWithContext(ctx, o.mount+"/roles/"+oauth1Role, map[string]any{
		"grant_type": "oauth1", "consumer_key": "bench-consumer", "consumer_secret": randomLike(strings.Repeat("x", 32)),
		"token": "bench-token", "token_secret": randomLike(strings.Repeat("x", 32)),
	}); err != nil {
		return fmt.Errorf("writing role %s: %w", oauth1Role, err)
	}
	if _, err := admin.Logical().WriteWithContext(ctx, o.mount+"/roles/"+dpopRole, map[string]any{"scopes": "read", "dpop": true}); err != nil {
		return fmt.Errorf("writing role %s: %w", dpopRole, err)
	}
	dpop := o.mount + "/sign/" + dpopRole
	first, err := admin.Logical().WriteWithContext(ctx, dpop, map[string]any{"url": signURL})
	if err != nil || first == nil {
		return fmt.Errorf("writing %s: %v", dpop, err)
	}
	kv := o.kvMount + "/" + kvPath + "-sign"
	if err := writeLookalike(ctx, admin, kv, first.Data); err != nil {
		return err
	}
	if err := admin.Sys().PutPolicyWithContext(ctx, "oauth-bench-signer", fmt.Sprintf(signerPolicy, o.mount, o.kvMount)); err != nil {
		return err
	}
	tok, err := admin.Auth().Token().CreateWithContext(ctx, &api.TokenCreateRequest{
		Policies: []string{"oauth-bench-signer"}, TTL: "4h", NoDefaultPolicy: true, DisplayName: "oauth-bench-signer",
	})
	if err != nil {
		return err
	}
	rounds := int((o.duration + metricsInterval - 1) / metricsInterval)
	for _, clients := range o.concurrency {
		c, err := newClient(o.vaultAddr, tok.Auth.ClientToken, clients)
		if err != nil {
			return err
		}
		oauth1 := o.mount + "/sign/" + oauth1Role
		targets := []readTarget{
			{label: "`" + oauth1 + "` (OAuth 1.0a, HMAC-SHA1)", mount: o.mount, op: "update", read: writePath(c, oauth1, map[string]any{"method": "GET", "url": signURL}, "authorization", "oauth_nonce")},
			{label: "`" + dpop + "` (DPoP proof, ES256)", mount: o.mount, op: "update", read: writePath(c, dpop, map[string]any{"method": "GET", "url": signURL}, "authorization", "dpop")},
			{label: "`" + kv + "` (KV v1 read, built in)", mount: o.kvMount, read: readPath(c, kv, "authorization")},
		}
		logf("signs: %d clients, %d × %s per target", clients, rounds, metricsInterval)
		results, err := measureReads(ctx, admin, targets, clients, rounds, logf)
		if err != nil {
			return err
		}
		rep.signs = append(rep.signs, signLevel{clients: clients, results: results})
	}
	return nil
}

func (rep *report) signsMarkdown(b *strings.Builder) {
	fmt.Fprintf(b, "### Signs: %d s per target in 10 s turns, alternating\n\n", int(rep.signs[0].results[0].lat.elapsed.Round(time.Second).Seconds()))
	b.WriteString("`sign/<role>` writes (the headers of one outgoing request: an OAuth 1.0a HMAC-SHA1 `Authorization` header, ")
	b.WriteString("or a DPoP proof signed with the role's P-256 key and its cached token) against a KV-v1 read of an answer of the same ")
	b.WriteString("fields. Clients use a non-root token whose policy allows only these paths.\n\n")
	b.WriteString("| clients | request | requests | errors | requests/s | p50 | p99 | in Vault, mean | storage writes / request |\n")
	b.WriteString("|--:|---|--:|--:|--:|--:|--:|--:|--:|\n")
	for _, lvl := range rep.signs {
		for _, r := range lvl.results {
			fmt.Fprintf(b, "| %d | %s | %d | %d | %.0f | %s | %s | %s | %s |\n",
				lvl.clients, r.target.label, len(r.lat.ok), r.lat.errors, r.lat.rate(),
				ms(r.lat.percentile(0.5)), ms(r.lat.percentile(0.99)), msFloat(meanMS(r.handle)), ratio(r, r.puts))
		}
	}
	b.WriteString("\nSide by side (same run, same server, alternating turns):\n\n")
	b.WriteString("| clients | signs/s OAuth 1.0a ÷ KV reads/s | signs/s DPoP ÷ KV reads/s | p50 OAuth 1.0a ÷ KV | p50 DPoP ÷ KV |\n")
	b.WriteString("|--:|--:|--:|--:|--:|\n")
	for _, lvl := range rep.signs {
		o1, dp, kv := lvl.results[0], lvl.results[1], lvl.results[2]
		fmt.Fprintf(b, "| %d | **%s** | **%s** | %s | %s |\n", lvl.clients,
			times(o1.lat.rate(), kv.lat.rate()), times(dp.lat.rate(), kv.lat.rate()),
			timesD(o1.lat.percentile(0.5), kv.lat.percentile(0.5)), timesD(dp.lat.percentile(0.5), kv.lat.percentile(0.5)))
	}
	b.WriteString("\n")
	for _, lvl := range rep.signs {
		for _, r := range lvl.results {
			if r.lat.firstErr != nil {
				fmt.Fprintf(b, "- %d concurrent, %s: first error: %v\n", lvl.clients, r.target.label, r.lat.firstErr)
			}
		}
	}
}
