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
	"golang.org/x/sync/singleflight"
)

// Storage layout. All three hold secrets and are seal-wrapped.
const (
	configPath   = "config"
	rolePrefix   = "roles/"
	tokenPrefix  = "tokens/"
	backendTitle = "OAuth 2.0 token broker"
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

	cache *entryCache
	// unsaved holds tokens the provider issued that storage refused; a rotated refresh token may
	// exist nowhere else, so it is kept and storing it is retried.
	unsaved sync.Map // role name -> *tokenEntry

	// refresher replaces tokens in the background before reads would have to wait for one.
	refresher *refresher
	// grantsOpen lets clean wait for the grants under way and refuses new ones after it.
	grantsOpen gate

	now func() time.Time
}

// Factory returns a configured backend, as Vault's plugin runtime calls it.
func Factory(ctx context.Context, conf *logical.BackendConfig) (logical.Backend, error) {
	b := newBackend()
	if err := b.Setup(ctx, conf); err != nil {
		return nil, err
	}
	return b, nil
}

func newBackend() *backend {
	b := &backend{
		roleLocks: locksutil.CreateLocks(),
		cache:     newEntryCache(),
		refresher: newRefresher(),
		now:       time.Now,
	}
	b.Backend = &framework.Backend{
		Help:        strings.TrimSpace(backendHelp),
		BackendType: logical.TypeLogical,
		PathsSpecial: &logical.Paths{
			SealWrapStorage: []string{configPath, rolePrefix, tokenPrefix},
		},
		Paths: framework.PathAppend(
			[]*framework.Path{pathConfig(b)},
			pathRoles(b),
			[]*framework.Path{pathCreds(b), pathRoleStatus(b), pathRotate(b)},
		),
		Secrets:        []*framework.Secret{secretAccessToken(b)},
		Invalidate:     b.invalidate,
		InitializeFunc: b.initialize,
		PeriodicFunc:   b.periodicRefresh,
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

// roleTarget is what an operation on one role works with.
type roleTarget struct {
	name string
	role *roleEntry
	// cfg is nil while the mount has no config.
	cfg *configEntry
}

// loadRoleTarget checks a per-role request (name, fields) and loads the role and the config,
// which must exist when needConfig is set. Bad input, an unknown role and a missing config are
// for errorResponse to report; anything else is storage failing.
func (b *backend) loadRoleTarget(ctx context.Context, req *logical.Request, d *framework.FieldData, needConfig bool) (*roleTarget, error) {
	name := d.Get("name").(string)
	if err := validateRoleName(name); err != nil {
		return nil, err
	}
	if err := rejectUnknownFields(req, d); err != nil {
		return nil, err
	}
	role, err := b.role(ctx, req.Storage, name)
	if err != nil {
		return nil, err
	}
	if role == nil {
		return nil, unknownRoleError(name)
	}
	cfg, err := b.config(ctx, req.Storage)
	if err != nil {
		return nil, err
	}
	if cfg == nil && needConfig {
		return nil, errNoConfig
	}
	return &roleTarget{name: name, role: role, cfg: cfg}, nil
}

func (b *backend) roleLock(name string) *locksutil.LockEntry {
	return locksutil.LockForKey(b.roleLocks, name)
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

const backendHelp = `
The OAuth secrets engine obtains OAuth 2.0 access tokens from an identity provider on behalf of
applications. An operator configures the provider at "config" and one role per application at
"roles/<name>"; an application reads "creds/<name>" and receives a cached access token as a
non-renewable lease that lasts as long as the token does.
`
