package oauth

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
	"github.com/oauth-broker/vault-plugin-secrets-oauth/internal/oauthclient"
)

// The device flow (RFC 8628) is polled by the plugin itself, one timer per flow on the backend's
// clock, from what storage holds: after a restart or on a new leader, initialize (and each
// periodic call) arms the timers again. x/oauth2's DeviceAccessToken would poll in one blocking
// call whose state lives only in that goroutine, which cannot survive a restart; so each poll is
// one token request here, and its outcome is stored before the next is planned.

// slowDownStep is what slow_down adds to the polling interval (RFC 8628 §3.5).
const slowDownStep = 5 * time.Second

// devicePolls holds the poll timer of each device flow.
type devicePolls struct {
	mu     sync.Mutex
	timers map[string]*pollTimer
	closed bool
}

type pollTimer struct{ stopper }

// stop cancels the role's poll timer.
func (d *devicePolls) stop(name string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if t := d.timers[name]; t != nil {
		t.Stop()
		delete(d.timers, name)
	}
}

// close cancels every timer and arms none after.
func (d *devicePolls) close() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.closed = true
	for name, t := range d.timers {
		t.Stop()
		delete(d.timers, name)
	}
}

func (d *devicePolls) armed(name string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.timers[name] != nil
}

// schedulePoll polls the role's device flow at at, replacing the poll planned before.
func (b *backend) schedulePoll(s logical.Storage, name string, at time.Time) {
	d := &b.devicePolls
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return
	}
	if d.timers == nil {
		d.timers = map[string]*pollTimer{}
	}
	if old := d.timers[name]; old != nil {
		old.Stop()
	}
	t := &pollTimer{}
	t.stopper = b.clock.AfterFunc(max(at.Sub(b.now()), 0), func() {
		d.mu.Lock()
		if d.timers[name] == t {
			delete(d.timers, name)
		}
		d.mu.Unlock()
		b.pollDevice(context.Background(), s, name)
	})
	d.timers[name] = t
}

// resumeDevicePolls arms a timer for every device flow under way that has none: after a start,
// a restart or a leader change.
func (b *backend) resumeDevicePolls(ctx context.Context, s logical.Storage) error {
	names, err := s.List(ctx, authzPrefix)
	if err != nil {
		return fmt.Errorf("listing authorizations: %w", err)
	}
	for _, name := range names {
		if b.devicePolls.armed(name) {
			continue
		}
		p, err := b.pending(ctx, s, name)
		if err != nil {
			return err
		}
		if p != nil && p.Kind == kindDevice && p.Outcome == "" {
			b.schedulePoll(s, name, p.NextPollAt)
		}
	}
	return nil
}

// pollDevice is one poll of the role's device flow, if one is due: a token request whose
// outcome is stored, and the next poll planned while the flow is pending.
func (b *backend) pollDevice(ctx context.Context, s logical.Storage, name string) {
	if !b.WriteSafeReplicationState() || !b.grantsOpen.enter() {
		return
	}
	defer b.grantsOpen.leave()
	p, err := b.pending(ctx, s, name)
	if err != nil {
		b.Logger().Warn("reading a device flow failed; the next periodic call tries again", "role", name, "error", err)
		return
	}
	if p == nil || p.Kind != kindDevice || p.Outcome != "" {
		return
	}
	now := b.now()
	switch {
	case !now.Before(p.ExpiresAt):
		b.updatePoll(ctx, s, name, p.ID, func(q *pendingAuthorization) { q.Outcome = outcomeExpired })
		return
	case now.Before(p.NextPollAt):
		b.schedulePoll(s, name, p.NextPollAt)
		return
	}
	role, err := b.role(ctx, s, name)
	if err != nil {
		return
	}
	cfg, err := b.config(ctx, s)
	if err != nil {
		return
	}
	if role == nil || cfg == nil || role.Incarnation != p.Incarnation || role.GrantType != grantDeviceCode {
		// The role changed under the flow: nothing it gives could be stored.
		b.updatePoll(ctx, s, name, p.ID, func(q *pendingAuthorization) {
			q.Outcome, q.LastPoll = outcomeExpired, "the role was changed while the device flow was pending"
		})
		return
	}
	sent := time.Now()
	tok, err := b.requestDeviceToken(ctx, s, name, cfg, role, p.DeviceCode)
	b.metrics.observeGrant(roleLabel(name, cfg), role.GrantType, time.Since(sent), err)
	if err == nil {
		b.deviceApproved(ctx, s, name, role, cfg, p, tok, now)
		return
	}
	var oe *oauthclient.Error
	code := ""
	if errors.As(err, &oe) {
		code = oe.Code
	}
	b.updatePoll(ctx, s, name, p.ID, func(q *pendingAuthorization) {
		q.LastPoll, q.LastPollAt = code, now
		switch code {
		case "authorization_pending":
		case "slow_down":
			q.Interval += slowDownStep
		case "access_denied":
			q.Outcome = outcomeDenied
		case "expired_token", "invalid_grant":
			q.Outcome = outcomeExpired
		default:
			// Anything else (the provider unreachable, the client refused) is retried at the
			// interval until the device code expires; status shows it.
			q.LastPoll = err.Error()
		}
		q.NextPollAt = now.Add(q.Interval)
		if oe != nil && oe.RetryAfter > 0 {
			q.NextPollAt = laterOf(q.NextPollAt, now.Add(min(oe.RetryAfter, maxRetryAfter)))
		}
	})
}

// requestDeviceToken is the device access token request (RFC 8628 §3.4).
func (b *backend) requestDeviceToken(ctx context.Context, s logical.Storage, name string, cfg *configEntry, role *roleEntry, deviceCode string) (*oauthclient.Token, error) {
	return withSecretNext(ctx, b, s, name, cfg, role, func(client *oauthclient.Client, tr oauthclient.TokenRequest) (*oauthclient.Token, error) {
		tr.GrantType = oauthclient.GrantDeviceCode
		tr.Scopes = nil // the device authorization request carried them
		tr.Params.Set("device_code", deviceCode)
		return client.Exchange(ctx, tr)
	})
}

// deviceApproved stores the tokens of an approved device flow, unless another flow replaced it.
func (b *backend) deviceApproved(ctx context.Context, s logical.Storage, name string, role *roleEntry, cfg *configEntry, p *pendingAuthorization, tok *oauthclient.Token, sent time.Time) {
	_, err := b.authorized(ctx, s, name, role, cfg, bindingOf(role, cfg), tok, "", sent, func() error {
		q, err := b.pending(ctx, s, name)
		if err != nil {
			return err
		}
		if q == nil || q.ID != p.ID {
			return errStaleAuthorization
		}
		return b.dropPending(ctx, s, name)
	})
	if err == nil {
		b.Logger().Info("device flow approved: the role is authorized", "role", name)
		return
	}
	b.Logger().Warn("an approved device flow could not be stored", "role", name, "error", err)
	b.updatePoll(ctx, s, name, p.ID, func(q *pendingAuthorization) {
		q.Outcome, q.LastPoll, q.LastPollAt = outcomeExpired, err.Error(), sent
	})
}

// updatePoll records a poll's outcome on the role's device flow, if it is still flow id, and
// plans the next poll while the flow is pending.
func (b *backend) updatePoll(ctx context.Context, s logical.Storage, name, id string, apply func(*pendingAuthorization)) {
	lock := b.roleLock(name)
	lock.Lock()
	q, err := b.pending(ctx, s, name)
	if err == nil && q != nil && q.ID == id {
		apply(q)
		err = putJSON(ctx, s, authzPrefix+name, q)
	}
	lock.Unlock()
	switch {
	case err != nil:
		b.Logger().Warn("recording a device poll failed; the next periodic call polls again", "role", name, "error", err)
	case q != nil && q.ID == id && q.Outcome == "":
		b.schedulePoll(s, name, q.NextPollAt)
	}
}
