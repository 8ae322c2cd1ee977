package oauth

import (
	"context"
	"strings"
	"sync"

	"github.com/hashicorp/vault/sdk/logical"
)

// initialize builds the refresh queue when the mount starts on a node that may write.
func (b *backend) initialize(ctx context.Context, req *logical.InitializationRequest) error {
	if !b.WriteSafeReplicationState() {
		return nil
	}
	cfg, err := b.config(ctx, req.Storage)
	if err != nil {
		return err
	}
	if err := b.buildQueue(ctx, req.Storage, cfg); err != nil {
		return err
	}
	if err := b.resumeDevicePolls(ctx, req.Storage); err != nil {
		return err
	}
	// Vault's first periodic call comes a minute after the mount starts: on a new leader, or
	// after a plugin reload, what falls due before then is refreshed now, as a tick would.
	b.refresher.passes.Add(1)
	go func() {
		defer b.refresher.passes.Done()
		if err := b.refreshDue(context.Background(), req.Storage); err != nil {
			b.Logger().Warn("the refresh pass at start-up failed; the next tick tries again", "error", err)
		}
	}()
	return nil
}

// invalidate drops what a replicated or standby write made stale.
func (b *backend) invalidate(_ context.Context, key string) {
	switch {
	case key == configPath:
		b.cache.config.drop("")
	case strings.HasPrefix(key, rolePrefix):
		b.cache.roles.drop(strings.TrimPrefix(key, rolePrefix))
		b.recheck(strings.TrimPrefix(key, rolePrefix))
	case strings.HasPrefix(key, tokenPrefix):
		b.cache.tokens.drop(strings.TrimPrefix(key, tokenPrefix))
		b.recheck(strings.TrimPrefix(key, tokenPrefix))
	}
}

// clean stops the refresher and waits for grants under way: after a plugin reload, a grant of
// the old instance must not race the new one with the same refresh token.
func (b *backend) clean(context.Context) {
	b.refresher.stop()
	b.devicePolls.close()
	b.refresher.passes.Wait()
	b.grantsOpen.close()
}

// gate counts the operations under way until it is closed, and admits none after.
type gate struct {
	mu     sync.RWMutex
	closed bool
	open   sync.WaitGroup
}

func (g *gate) enter() bool {
	g.mu.RLock()
	defer g.mu.RUnlock()
	if g.closed {
		return false
	}
	g.open.Add(1)
	return true
}

func (g *gate) leave() { g.open.Done() }

// close refuses new operations and waits for those under way.
func (g *gate) close() {
	g.mu.Lock()
	g.closed = true
	g.mu.Unlock()
	g.open.Wait()
}
