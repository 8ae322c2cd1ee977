package main

import (
	"context"
	"fmt"
	"time"

	"github.com/hashicorp/vault/api"
)

// burstResult is what a burst of concurrent reads of a role without a token cost the provider.
type burstResult struct {
	readers  int
	delay    time.Duration
	grants   int64 // token requests the provider received from the role's client
	total    int64 // token requests the provider received from anyone
	lat      *latencies
	distinct int // distinct access tokens the readers got
}

// coldBurst fires readers concurrent reads at a role that has no token yet. The provider holds
// each token request for delay, so that every reader arrives while the first grant is open.
func coldBurst(ctx context.Context, admin *api.Client, p *provider, addr, token, mount string, readers int, delay time.Duration) (*burstResult, error) {
	id, secret, err := p.register(ctx, time.Hour)
	if err != nil {
		return nil, err
	}
	const role = "bench-cold"
	if _, err := admin.Logical().WriteWithContext(ctx, mount+"/roles/"+role, map[string]any{
		"client_id": id, "client_secret": secret, "scopes": "read",
	}); err != nil {
		return nil, fmt.Errorf("writing role %s: %w", role, err)
	}
	// One connection per reader, all opened at once.
	c, err := newClient(addr, token, readers)
	if err != nil {
		return nil, err
	}
	if err := p.setDelay(ctx, delay); err != nil {
		return nil, err
	}
	defer func() { _ = p.setDelay(context.WithoutCancel(ctx), 0) }()
	if err := p.resetStats(ctx); err != nil {
		return nil, err
	}

	path := mount + "/creds/" + role
	lat, tokens := burst(ctx, readers, func(ctx context.Context) (string, error) {
		s, err := c.Logical().ReadWithContext(ctx, path)
		if err != nil {
			return "", err
		}
		if s == nil || s.Data["access_token"] == nil {
			return "", fmt.Errorf("read %s: no access_token", path)
		}
		return fmt.Sprint(s.Data["access_token"]), nil
	})
	st, err := p.stats(ctx)
	if err != nil {
		return nil, err
	}
	return &burstResult{
		readers: readers, delay: delay, grants: st.ByClient[id], total: st.TokenRequests,
		lat: lat, distinct: len(tokens),
	}, nil
}
