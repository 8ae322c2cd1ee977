package oauth

import (
	"encoding/binary"
	"errors"
	"hash/fnv"
	"math"
	"slices"
	"time"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/oauth-broker/vault-plugin-secrets-oauth/internal/oauthclient"
)

// refreshPolicy says how early a token is replaced: when the time it has left falls below
// max(RefreshBuffer, RefreshFraction × lifetime).
type refreshPolicy struct {
	RefreshBuffer   time.Duration `json:"refresh_buffer"`
	RefreshFraction float64       `json:"refresh_fraction"`
}

func (p refreshPolicy) describe(data map[string]any) {
	data["refresh_buffer"] = int64(p.RefreshBuffer.Seconds())
	data["refresh_fraction"] = p.RefreshFraction
}

func (p *refreshPolicy) update(d *framework.FieldData) {
	setDuration(d, "refresh_buffer", &p.RefreshBuffer)
	if v, ok := d.GetOk("refresh_fraction"); ok {
		p.RefreshFraction = v.(float64)
	}
}

func (p refreshPolicy) validate() error {
	if err := validateDuration("refresh_buffer", p.RefreshBuffer, maxDuration); err != nil {
		return err
	}
	if p.RefreshFraction < 0 || p.RefreshFraction > 0.9 {
		return fieldErrorf("refresh_fraction", "must be between 0 and 0.9")
	}
	return nil
}

// defaultPolicy applies while no config exists.
var defaultPolicy = refreshPolicy{RefreshFraction: defaultRefreshFraction}

func configPolicy(cfg *configEntry) refreshPolicy {
	if cfg == nil {
		return defaultPolicy
	}
	return cfg.refreshPolicy
}

// effectivePolicy takes each refresh setting from the role where it sets one, else from the
// config (cfg may be nil).
func effectivePolicy(role *roleEntry, cfg *configEntry) refreshPolicy {
	p, defaults := role.refreshPolicy, configPolicy(cfg)
	if p.RefreshBuffer == 0 && !slices.Contains(role.RefreshOverrides, "refresh_buffer") {
		p.RefreshBuffer = defaults.RefreshBuffer
	}
	if p.RefreshFraction == 0 && !slices.Contains(role.RefreshOverrides, "refresh_fraction") {
		p.RefreshFraction = defaults.RefreshFraction
	}
	return p
}

// minRefreshLeft is the least time a served token has left, whatever the refresh settings: a
// token handed out with less would expire on its way to the API.
const minRefreshLeft = 5 * time.Second

// refreshThreshold is the time left below which a token is replaced:
// max(buffer, fraction × lifetime, minRefreshLeft), capped at 90% of the lifetime so that even a
// token shorter than the buffer is used for a while before it is replaced.
func refreshThreshold(p refreshPolicy, lifetime time.Duration) time.Duration {
	th := max(p.RefreshBuffer, time.Duration(p.RefreshFraction*float64(lifetime)), minRefreshLeft)
	return min(th, lifetime*9/10)
}

// The refresher replaces tokens before reads would have to: Vault calls PeriodicFunc about once a
// minute, and each call refreshes every role that would otherwise fall below its threshold before
// the next call.
const (
	// refreshTick is the period of Vault's rollback manager, which calls PeriodicFunc.
	refreshTick = time.Minute
	// refreshHorizon is how far ahead a tick looks: to the next tick, plus half a tick of slack
	// for a late one.
	refreshHorizon = refreshTick + refreshTick/2
	// jitterShare of a token's refresh window (lifetime − threshold), up to maxJitter, spreads the
	// refreshes of roles whose tokens were obtained together. Jitter only ever refreshes earlier.
	jitterShare = 0.2
	maxJitter   = 10 * time.Minute
	// After a failure the next attempt waits backoffBase × 2^(failures−1), at most maxBackoff,
	// "equal jitter": a random point in the second half of that.
	backoffBase = refreshTick
	maxBackoff  = 10 * time.Minute
	// maxRetryAfter bounds how long one Retry-After answer can hold a role back.
	maxRetryAfter = time.Hour
)

// refreshPlan is when the refresher next acts on a role. It depends only on stored state, so a
// queue rebuilt after a restart is the queue that was lost.
type refreshPlan struct {
	// at is the first moment the refresher acts; zero means at the next tick.
	at time.Time
	// lead is the time left at which the token is replaced: the threshold plus jitter.
	lead time.Duration
	// onRead marks tokens that live less than a tick: the refresher cannot keep them alive, so
	// reads replace them. Tokens whose refresh window (lifetime − threshold) is under the
	// horizon are only kept from expiring: reads replace them once below threshold.
	onRead bool
}

// planRefresh schedules the replacement of tok, or after failures its next attempt.
func planRefresh(name string, tok *tokenEntry, p refreshPolicy) refreshPlan {
	var plan refreshPlan
	if tok != nil && tok.AccessToken != "" {
		life := tok.lifetime()
		th := refreshThreshold(p, life)
		if life < refreshTick {
			// Shorter than a tick: the refresher cannot keep it alive, reads replace it.
			return refreshPlan{onRead: true}
		}
		if life-th < refreshHorizon {
			// A refresh window this narrow would have each tick replace the token a read got
			// seconds earlier. Keep it from expiring instead; reads replace it below threshold.
			plan.at = tok.ExpiresAt.Add(-refreshHorizon)
			return withRetry(name, tok, plan)
		}
		spread := min(time.Duration(float64(life-th)*jitterShare), maxJitter)
		plan.lead = th + time.Duration(unitHash(name, tok.ObtainedAt)*float64(spread))
		// Act at the last tick that still comes before the token falls to lead.
		plan.at = tok.ExpiresAt.Add(-plan.lead - refreshHorizon)
	}
	return withRetry(name, tok, plan)
}

// withRetry holds the plan back after failures, until the backoff and Retry-After allow.
func withRetry(name string, tok *tokenEntry, plan refreshPlan) refreshPlan {
	if tok != nil && tok.ConsecutiveFailures > 0 {
		if retry := retryAt(name, tok); retry.After(plan.at) {
			plan.at = retry
		}
	}
	return plan
}

// retryAt is when a role that failed may be tried again: exponential backoff from the last
// failure, and never before the provider's Retry-After.
func retryAt(name string, tok *tokenEntry) time.Time {
	n := min(tok.ConsecutiveFailures, 16)
	ceiling := min(backoffBase<<(n-1), maxBackoff)
	wait := ceiling/2 + time.Duration(unitHash(name, tok.LastErrorAt)*float64(ceiling/2))
	return laterOf(tok.LastErrorAt.Add(wait), tok.RetryAt)
}

// retryAfter is the time before which the provider asked not to be called again, if it did.
func retryAfter(err error, now time.Time) time.Time {
	var oe *oauthclient.Error
	if !errors.As(err, &oe) || oe.RetryAfter <= 0 {
		return time.Time{}
	}
	return now.Add(min(oe.RetryAfter, maxRetryAfter))
}

// unitHash maps a role and a moment to [0, 1): jitter that is the same after a restart.
func unitHash(name string, t time.Time) float64 {
	h := fnv.New64a()
	h.Write([]byte(name))
	var buf [12]byte
	binary.BigEndian.PutUint64(buf[:8], uint64(t.Unix()))
	binary.BigEndian.PutUint32(buf[8:], uint32(t.Nanosecond()))
	h.Write(buf[:])
	return float64(h.Sum64()>>11) / (1 << 53)
}

func laterOf(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// queueResolution is the unit of queue priorities: a role comes due up to this much before the
// moment its plan names.
const queueResolution = time.Millisecond

// priority orders the queue by the moment to act; tokens left to reads never come due.
func (p refreshPlan) priority() int64 {
	if p.onRead {
		return math.MaxInt64
	}
	return p.at.UnixMilli()
}
