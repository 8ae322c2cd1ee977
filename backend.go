// Package oauth is a Vault secrets engine that brokers OAuth 2.0 access tokens.
package oauth

import (
	"context"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/helper/locksutil"
	"github.com/hashicorp/vault/sdk/logical"
	"github.com/oauth-broker/vault-plugin-secrets-oauth/internal/oauthclient"
	"golang.org/x/sync/singleflight"
)

// Version is reported to Vault as the plugin's running version; main sets it from a linker flag.
var Version = "v0.0.0-dev"

type backend struct {
	*framework.Backend

	// roleLocks serialise storage writes per role. They are never held across a call to the
	// provider, so one slow provider cannot stall an unrelated role.
	roleLocks []*locksutil.LockEntry
	// grants makes concurrent readers of one role share one upstream token request.
	grants singleflight.Group
	// chainMu serialises role writes and deletes, so that the subject_role / actor_role checks
	// cannot race (two writes closing a loop between them).
	chainMu sync.Mutex
	// exchanges caches exchange/ answers in memory, never in storage.
	exchanges *exchangeCache

	cache *entryCache
	// unsaved holds tokens the provider issued that storage refused; a rotated refresh token may
	// exist nowhere else, so it is kept and storing it is retried.
	unsaved sync.Map // role name -> *tokenEntry

	// refresher replaces tokens in the background before reads would have to wait for one.
	refresher *refresher
	metrics   *metrics
	// dpopNonces holds the latest DPoP-Nonce the provider sent each DPoP role (RFC 9449 §8).
	dpopNonces sync.Map // role name -> string
	// dpopKeys holds each DPoP role's key parsed, so that a sign/ or a grant does not parse it again.
	dpopKeys sync.Map // role name -> parsedDPoPKey
	// grantsOpen lets clean wait for the grants under way and refuses new ones after it.
	grantsOpen gate
	// devicePolls holds the timer of each device flow the plugin is polling for.
	devicePolls devicePolls
	// callbacks rate-limits failed browser callbacks.
	callbacks callbackLimiter

	// configLock serialises the config's storage writes with promotions of its client secret.
	configLock sync.Mutex
	// keyLocks serialise writes per mount key; keySchedule says when each is next due.
	keyLocks    sync.Map // name -> *sync.Mutex
	keySchedule keySchedule

	clock clock
	// newClient builds the HTTP client for a provider's trust roots and request timeout.
	newClient func(caPEM string, timeout time.Duration) (*oauthclient.Client, error)
}

// clock tells the backend the time and runs its timers; tests give it one they move.
type clock interface {
	Now() time.Time
	// AfterFunc calls f once d has passed.
	AfterFunc(d time.Duration, f func()) stopper
}

// stopper is a timer: Stop keeps its function from running, if it has not yet.
type stopper interface{ Stop() bool }

type systemClock struct{}

func (systemClock) Now() time.Time { return time.Now() }

func (systemClock) AfterFunc(d time.Duration, f func()) stopper { return time.AfterFunc(d, f) }

// Factory returns a configured backend, as Vault's plugin runtime calls it.
func Factory(ctx context.Context, conf *logical.BackendConfig) (logical.Backend, error) {
	b := newBackend(systemClock{}, oauthclient.NewClient)
	if err := b.Setup(ctx, conf); err != nil {
		return nil, err
	}
	return b, nil
}

func newBackend(clk clock, newClient func(caPEM string, timeout time.Duration) (*oauthclient.Client, error)) *backend {
	b := &backend{
		roleLocks: locksutil.CreateLocks(),
		cache:     newEntryCache(),
		metrics:   newMetrics(),
		refresher: newRefresher(),
		exchanges: newExchangeCache(defaultExchangeEntries, defaultExchangeBytes),
		clock:     clk,
		newClient: newClient,
	}
	b.Backend = &framework.Backend{
		Help:        strings.TrimSpace(backendHelp),
		BackendType: logical.TypeLogical,
		PathsSpecial: &logical.Paths{
			SealWrapStorage: []string{configPath, rolePrefix, tokenPrefix, authzPrefix, statePrefix, keyPrefix},
			// The provider sends the browser back to callback, and fetches jwks, without a Vault token.
			Unauthenticated: []string{"callback", "jwks"},
		},
		Paths: framework.PathAppend(
			[]*framework.Path{pathConfig(b)},
			pathRoles(b),
			[]*framework.Path{pathCreds(b), pathRoleStatus(b), pathRotate(b), pathMetrics(b), pathExchange(b), pathSign(b)},
			[]*framework.Path{pathAuthorize(b), pathCallback(b), pathDevice(b)},
			pathKeys(b),
			pathPromoteSecret(b),
		),
		Secrets:        []*framework.Secret{secretAccessToken(b)},
		Invalidate:     b.invalidate,
		InitializeFunc: b.initialize,
		PeriodicFunc:   b.periodic,
		Clean:          b.clean,
		RunningVersion: Version,
	}
	return b
}

// HandleRequest checks what must be checked before the SDK sees the request data.
func (b *backend) HandleRequest(ctx context.Context, req *logical.Request) (*logical.Response, error) {
	if err := rejectMistypedSecrets(req.Data); err != nil {
		return errorResponse(err)
	}
	return b.Backend.HandleRequest(ctx, req)
}

func (b *backend) roleLock(name string) *locksutil.LockEntry {
	return locksutil.LockForKey(b.roleLocks, name)
}

// lockRole locks the role's name and reads the role as stored (nil: there is none); the caller
// unlocks, whatever the error.
func (b *backend) lockRole(ctx context.Context, s logical.Storage, name string) (*roleEntry, func(), error) {
	lock := b.roleLock(name)
	lock.Lock()
	role, err := readEntry[roleEntry](ctx, s, rolePrefix+name)
	return role, lock.Unlock, err
}

func (b *backend) now() time.Time { return b.clock.Now() }

const backendHelp = `
The OAuth secrets engine obtains OAuth 2.0 access tokens from an identity provider on behalf of
applications. An operator configures the provider at "config" and one role per application at
"roles/<name>"; an application reads "creds/<name>" and receives a cached access token as a
non-renewable lease that lasts as long as the token does.
`
