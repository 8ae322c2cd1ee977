package oauth

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sync"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
	"github.com/hashicorp/vault/sdk/queue"
)

// refreshQueue is the priority queue of roles by the moment the refresher next acts on them.
type refreshQueue struct {
	mu sync.Mutex
	pq *queue.PriorityQueue
}

func newRefreshQueue() *refreshQueue { return &refreshQueue{pq: queue.New()} }

// set puts name at priority, replacing any earlier entry.
func (q *refreshQueue) set(name string, priority int64) {
	q.mu.Lock()
	defer q.mu.Unlock()
	_, _ = q.pq.PopByKey(name)
	// Push fails only on a duplicate key, which the line above removed.
	_ = q.pq.Push(&queue.Item{Key: name, Priority: priority})
}

func (q *refreshQueue) remove(name string) {
	q.mu.Lock()
	defer q.mu.Unlock()
	_, _ = q.pq.PopByKey(name)
}

// popDue removes and returns the entries whose priority is at most until, earliest first.
func (q *refreshQueue) popDue(until int64) []*queue.Item {
	q.mu.Lock()
	defer q.mu.Unlock()
	var due []*queue.Item
	for {
		item, err := q.pq.Pop()
		if err != nil {
			return due
		}
		if item.Priority > until {
			_ = q.pq.Push(item)
			return due
		}
		due = append(due, item)
	}
}

// stats is the queue's size and the moment its earliest role comes due (zero when none will:
// an empty queue, or only roles that reads replace).
func (q *refreshQueue) stats() (size int, earliest time.Time) {
	q.mu.Lock()
	defer q.mu.Unlock()
	item, err := q.pq.Pop()
	if err != nil {
		return 0, time.Time{}
	}
	// Push fails only on a duplicate key, and this one was just popped.
	_ = q.pq.Push(item)
	// Roles planned "at the next tick" (priority before 1970) say nothing of how late it is.
	if item.Priority > 0 && item.Priority != math.MaxInt64 {
		earliest = time.UnixMilli(item.Priority)
	}
	return q.pq.Len(), earliest
}

// refresher is the backend's background refresh state.
type refresher struct {
	mu sync.Mutex
	// queue is nil until it is built from storage: on initialize, or at the first tick on a node
	// that may write.
	queue *refreshQueue
	// builtFor is the config the queue was planned with; another one rebuilds it.
	builtFor *configEntry
	// rescheduled collects, while a build runs, the roles rescheduled meanwhile, which the new
	// queue must plan again.
	rescheduled map[string]bool
	// ticking lets one tick run at a time.
	ticking sync.Mutex
	// passes counts the refresh passes that initialize started, which clean waits for.
	passes sync.WaitGroup
	// stopped is closed when the backend is cleaned up: ticks end.
	stopped  chan struct{}
	stopOnce sync.Once
}

func newRefresher() *refresher {
	return &refresher{stopped: make(chan struct{})}
}

// stop ends the refresher's ticks for good.
func (r *refresher) stop() { r.stopOnce.Do(func() { close(r.stopped) }) }

// current returns the queue, or nil while none is built.
func (r *refresher) current() *refreshQueue {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.queue
}

// noteRescheduled records that name's plan changed, for a build under way to plan it again.
func (r *refresher) noteRescheduled(name string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.rescheduled != nil {
		r.rescheduled[name] = true
	}
}

// buildQueue schedules every role from what storage holds and replaces the queue with the result;
// roles rescheduled while it ran are planned again in the new queue.
func (b *backend) buildQueue(ctx context.Context, s logical.Storage, cfg *configEntry) error {
	b.refresher.mu.Lock()
	b.refresher.rescheduled = map[string]bool{}
	b.refresher.mu.Unlock()
	q, err := b.planAll(ctx, s, cfg)

	b.refresher.mu.Lock()
	again := b.refresher.rescheduled
	b.refresher.rescheduled = nil
	if err == nil {
		b.refresher.queue, b.refresher.builtFor = q, cfg
	}
	b.refresher.mu.Unlock()
	if err != nil {
		return err
	}
	for name := range again {
		b.reschedule(ctx, s, name)
	}
	return nil
}

// planAll plans every stored role into a new queue.
func (b *backend) planAll(ctx context.Context, s logical.Storage, cfg *configEntry) (*refreshQueue, error) {
	names, err := s.List(ctx, rolePrefix)
	if err != nil {
		return nil, fmt.Errorf("listing roles: %w", err)
	}
	q := newRefreshQueue()
	for _, name := range names {
		role, err := b.role(ctx, s, name)
		if err != nil {
			return nil, err
		}
		if role == nil {
			continue
		}
		tok, err := b.currentToken(ctx, s, name)
		if err != nil {
			return nil, err
		}
		if !role.readerSupplied() {
			q.set(name, b.plan(ctx, s, name, role, tok, cfg).priority())
		}
	}
	return q, nil
}

// plan is planRefresh for a role as it is now: a token obtained for another binding (the role or
// config changed) is replaced at the next tick, and so is a token storage refused.
func (b *backend) plan(ctx context.Context, s logical.Storage, name string, role *roleEntry, tok *tokenEntry, cfg *configEntry) refreshPlan {
	if role.GrantType == grantOAuth1 {
		// Nothing to refresh: the role signs with the credentials it holds.
		return refreshPlan{onRead: true}
	}
	bd, err := b.binding(ctx, s, name, role, cfg)
	if err != nil || tok != nil && tok.Binding != "" && tok.Binding != bd.access {
		stale := *tok
		stale.AccessToken = ""
		tok = &stale
	}
	if grantFlows[role.GrantType].startPath != "" {
		if rt, _ := tok.refreshTokenFor(b.cache.binding(name, role, cfg)); rt == "" {
			// Nothing to refresh until a person authorizes the role.
			return refreshPlan{onRead: true}
		}
	}
	plan := planRefresh(name, tok, effectivePolicy(role, cfg))
	if _, unsaved := b.unsaved.Load(name); unsaved {
		plan.at, plan.onRead = time.Time{}, false
	}
	return plan
}

// reschedule brings the role's queue entry in step with its stored role and token. It takes no
// role lock, so that writers holding one can call it.
func (b *backend) reschedule(ctx context.Context, s logical.Storage, name string) {
	b.refresher.noteRescheduled(name)
	q := b.refresher.current()
	if q == nil {
		return
	}
	role, tok, cfg, err := b.roleState(ctx, s, name)
	switch {
	case err != nil:
		// The next tick looks again.
		b.Logger().Warn("scheduling the refresh failed", "role", name, "error", err)
		q.set(name, b.now().UnixMilli())
	case role == nil, role.readerSupplied():
		q.remove(name)
	default:
		q.set(name, b.plan(ctx, s, name, role, tok, cfg).priority())
	}
}

// forget drops a deleted role from the queue.
func (b *backend) forget(name string) {
	b.refresher.noteRescheduled(name)
	if q := b.refresher.current(); q != nil {
		q.remove(name)
	}
}

// recheck makes the next tick look at the role again, for changes made by another node.
func (b *backend) recheck(name string) {
	b.refresher.noteRescheduled(name)
	if q := b.refresher.current(); q != nil {
		q.set(name, b.now().UnixMilli())
	}
}

// roleState reads a role, its newest token and the config.
func (b *backend) roleState(ctx context.Context, s logical.Storage, name string) (*roleEntry, *tokenEntry, *configEntry, error) {
	role, err := b.role(ctx, s, name)
	if err != nil || role == nil {
		return nil, nil, nil, err
	}
	tok, err := b.currentToken(ctx, s, name)
	if err != nil {
		return nil, nil, nil, err
	}
	cfg, err := b.config(ctx, s)
	if err != nil {
		return nil, nil, nil, err
	}
	return role, tok, cfg, nil
}

// periodic is the backend's PeriodicFunc, which Vault calls about once a minute: it refreshes
// tokens and rotates mount keys, each on its own schedule.
func (b *backend) periodic(ctx context.Context, req *logical.Request) error {
	if !b.WriteSafeReplicationState() {
		return nil
	}
	if err := b.resumeDevicePolls(ctx, req.Storage); err != nil {
		b.Logger().Warn("resuming device flows failed; the next tick tries again", "error", err)
	}
	keysErr := b.maintainKeys(ctx, req.Storage)
	return errors.Join(b.refreshDue(ctx, req.Storage), keysErr)
}

// refreshDue refreshes, with at most max_concurrent_refreshes requests at once, every role due
// before the next tick: the work of one tick.
func (b *backend) refreshDue(ctx context.Context, s logical.Storage) error {
	if !b.refresher.ticking.TryLock() {
		// The previous tick is still at work and will reach what is due.
		return nil
	}
	defer b.refresher.ticking.Unlock()
	select {
	case <-b.refresher.stopped:
		return nil
	default:
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-b.refresher.stopped:
			cancel()
		case <-ctx.Done():
		}
	}()

	cfg, err := b.config(ctx, s)
	if err != nil {
		return err
	}
	if cfg == nil {
		// Nothing can be refreshed before the provider is configured.
		return nil
	}
	if err := b.ensureQueue(ctx, s, cfg); err != nil {
		return err
	}
	start := time.Now()
	due := b.refresher.current().popDue(b.now().UnixMilli())
	b.refreshAll(ctx, s, cfg, due)
	b.metrics.tickSeconds.Observe(time.Since(start).Seconds())
	return nil
}

// ensureQueue builds the queue if there is none, or rebuilds it for a new config: its refresh
// policy and its client and endpoint (which decide which tokens may still be served) plan roles.
func (b *backend) ensureQueue(ctx context.Context, s logical.Storage, cfg *configEntry) error {
	b.refresher.mu.Lock()
	fresh := b.refresher.queue != nil && b.refresher.builtFor == cfg
	b.refresher.mu.Unlock()
	if fresh {
		return nil
	}
	return b.buildQueue(ctx, s, cfg)
}

// refreshAll works through due with max_concurrent_refreshes workers. What a cancelled tick
// did not reach goes back to the queue as it was.
func (b *backend) refreshAll(ctx context.Context, s logical.Storage, cfg *configEntry, due []*queue.Item) {
	work := make(chan string)
	var wg sync.WaitGroup
	for range min(max(cfg.MaxConcurrentRefreshes, 1), len(due)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for name := range work {
				b.refreshRole(ctx, s, name)
			}
		}()
	}
	q := b.refresher.current()
	for i, item := range due {
		if ctx.Err() == nil {
			select {
			case work <- item.Key:
				continue
			case <-ctx.Done():
			}
		}
		for _, rest := range due[i:] {
			q.set(rest.Key, rest.Priority)
		}
		break
	}
	close(work)
	wg.Wait()
}

// refreshRole replaces the role's token if it is due before the next tick, then schedules the
// role again. A failure keeps the cached token and the role's place in the queue.
func (b *backend) refreshRole(ctx context.Context, s logical.Storage, name string) {
	// Even when the tick is cancelled, the role goes back to the queue.
	defer b.reschedule(context.WithoutCancel(ctx), s, name)
	role, tok, cfg, err := b.roleState(ctx, s, name)
	if err != nil || role == nil || cfg == nil || role.readerSupplied() {
		return
	}
	plan := b.plan(ctx, s, name, role, tok, cfg)
	if plan.priority() > b.now().UnixMilli() {
		// Queued early (a change on another node, or a read refreshed it meanwhile).
		return
	}
	// Failures are recorded (and logged) by the grant; the deferred reschedule backs off.
	b.obtainToken(ctx, s, name, plan.lead+refreshHorizon+queueResolution, byRefresher)
}
