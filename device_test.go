package oauth

import (
	"context"
	"fmt"
	"net/http"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/helper/consts"
	"github.com/hashicorp/vault/sdk/logical"

	"github.com/oauth-broker/vault-plugin-secrets-oauth/internal/oauthclient"
	"github.com/oauth-broker/vault-plugin-secrets-oauth/internal/testprovider"
)

// deviceEnv is a backend on a pinned clock whose role "app" is a device_code role against a
// provider with a device authorization endpoint. The plugin's polls run when the test moves the
// clock past them.
type deviceEnv struct {
	b     *backend
	s     *faultyStorage
	p     *testprovider.Provider
	clock *testClock
}

func newDeviceEnv(t *testing.T) *deviceEnv {
	t.Helper()
	p := newProviderWithClient(t)
	b, s := newTestBackend(t)
	e := &deviceEnv{b: b, s: s, p: p, clock: clockOf(b)}
	e.clock.Pin(time.Now())
	mustSucceed(t, request(t, b, s, logical.UpdateOperation, "config", map[string]any{
		"issuer": p.URL, "client_id": testClientID, "client_secret": testClientSecret,
	}))
	mustSucceed(t, request(t, b, s, logical.UpdateOperation, "roles/app", map[string]any{"grant_type": "device_code", "scopes": "openid,offline_access"}))
	initialize(t, b, s)
	return e
}

// start begins a device flow and returns its user code.
func (e *deviceEnv) start(t *testing.T) string {
	t.Helper()
	resp := mustSucceed(t, request(t, e.b, e.s, logical.UpdateOperation, "device/app", nil))
	if resp.Data["interval"] != int64(5) || resp.Data["expires_in"] != int64(600) || resp.Data["verification_uri"] != e.p.URL+"/device" ||
		resp.Data["verification_uri_complete"] == nil {
		t.Fatalf("device/app answered %v", resp.Data)
	}
	return resp.Data["user_code"].(string)
}

func (e *deviceEnv) status(t *testing.T) map[string]any {
	t.Helper()
	return mustSucceed(t, request(t, e.b, e.s, logical.ReadOperation, "roles/app/status", nil)).Data
}

// advance moves the clock by d (running the polls due) and checks how many token requests the
// plugin made meanwhile and where the flow stands.
func (e *deviceEnv) advance(t *testing.T, d time.Duration, polls int64, authorization, lastPoll string) {
	t.Helper()
	before := e.p.Requests()
	e.clock.Advance(d)
	if got := e.p.Requests() - before; got != polls {
		t.Fatalf("after %s: %d polls, want %d", d, got, polls)
	}
	st := e.status(t)
	if st["authorization"] != authorization || (lastPoll != "" && st["last_poll"] != lastPoll) {
		t.Fatalf("after %s: authorization %v, last_poll %v; want %s, %s", d, st["authorization"], st["last_poll"], authorization, lastPoll)
	}
}

func TestDeviceFlowApproved(t *testing.T) {
	e := newDeviceEnv(t)
	mustFailNaming(t, request(t, e.b, e.s, logical.ReadOperation, "creds/app", nil), "vault write -force <mount>/device/app")
	code := e.start(t)
	e.advance(t, 4*time.Second, 0, "pending", "")
	e.advance(t, time.Second, 1, "pending", "authorization_pending")
	e.p.SlowDownDevice(code)
	e.advance(t, 5*time.Second, 1, "pending", "slow_down")
	// slow_down: the interval is 10 s from now on.
	e.advance(t, 5*time.Second, 0, "pending", "slow_down")
	e.advance(t, 5*time.Second, 1, "pending", "authorization_pending")
	e.p.ApproveDevice(code, "dave")
	e.advance(t, 10*time.Second, 1, "authorized", "")
	st := e.status(t)
	if st["sub"] != "dave" || st["authorized_at"] == "" {
		t.Fatalf("status: %v", st)
	}
	at := readCreds(t, e.b, e.s, "app", nil).Data["access_token"].(string)
	if issued, active := e.p.Introspect(at); !active || issued.Subject != "dave" {
		t.Fatalf("token not active for dave: %+v", issued)
	}
	// Nothing polls any more.
	e.advance(t, time.Minute, 0, "authorized", "")
	if keys, _ := e.s.List(context.Background(), authzPrefix); len(keys) != 0 {
		t.Fatalf("the finished flow is still stored: %v", keys)
	}
}

func TestDeviceFlowEnds(t *testing.T) {
	cases := []struct {
		name  string
		end   func(e *deviceEnv, code string)
		after time.Duration
		polls int64
		last  string
		want  string
	}{
		{"denied", func(e *deviceEnv, code string) { e.p.DenyDevice(code) }, 5 * time.Second, 1, "access_denied", "denied"},
		{"expired at the provider", func(e *deviceEnv, code string) { e.p.ExpireDevice(code) }, 5 * time.Second, 1, "expired_token", "expired"},
		{"expired here", func(*deviceEnv, string) {}, 10 * time.Minute, 1, "", "expired"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := newDeviceEnv(t)
			code := e.start(t)
			tc.end(e, code)
			if tc.name == "expired here" {
				// The provider keeps answering pending; the plugin stops at expires_in. Jump
				// over the polls on the way, which each plan the next one.
				e.p.Intercept = func(w http.ResponseWriter, _ *http.Request) bool {
					w.Header().Set("Content-Type", "application/json")
					w.WriteHeader(http.StatusBadRequest)
					_, _ = w.Write([]byte(`{"error":"authorization_pending"}`))
					return true
				}
				e.clock.Advance(5 * time.Second)
				e.advance(t, tc.after, 0, tc.want, "authorization_pending")
				return
			}
			e.advance(t, tc.after, tc.polls, tc.want, tc.last)
			e.advance(t, time.Minute, 0, tc.want, tc.last)
			mustFailNaming(t, request(t, e.b, e.s, logical.ReadOperation, "creds/app", nil), "device/app")
		})
	}
}

// A restart (a new backend on the same storage) resumes a pending device flow.
func TestDeviceFlowResumesAfterRestart(t *testing.T) {
	e := newDeviceEnv(t)
	code := e.start(t)
	e.b.Cleanup(context.Background())
	before := e.p.Requests()
	e.clock.Advance(time.Minute)
	if e.p.Requests() != before {
		t.Fatal("a cleaned-up backend polled")
	}
	e.p.ApproveDevice(code, "erin")

	b := newBackend(e.clock, oauthclient.NewClient)
	conf := logical.TestBackendConfig()
	conf.StorageView = e.s
	if err := b.Setup(context.Background(), conf); err != nil {
		t.Fatal(err)
	}
	initialize(t, b, e.s)
	e.b = b
	// The poll was overdue: it runs at the next move of the clock.
	e.advance(t, 0, 1, "authorized", "")
	if st := e.status(t); st["sub"] != "erin" {
		t.Fatalf("status: %v", st)
	}
}

// Deleting the role, or starting another flow, stops the polling of the one under way.
func TestDeviceFlowStops(t *testing.T) {
	e := newDeviceEnv(t)
	first := e.start(t)
	second := e.start(t)
	e.p.ApproveDevice(first, "frank")
	// Only the second flow is polled: pending.
	e.advance(t, 5*time.Second, 1, "pending", "authorization_pending")
	e.p.ApproveDevice(second, "grace")
	mustSucceed(t, request(t, e.b, e.s, logical.DeleteOperation, "roles/app", nil))
	before := e.p.Requests()
	e.clock.Advance(time.Minute)
	if e.p.Requests() != before {
		t.Fatal("the deleted role's flow was polled")
	}
	if keys, _ := e.s.List(context.Background(), authzPrefix); len(keys) != 0 {
		t.Fatalf("the deleted role's flow is still stored: %v", keys)
	}
}

// Polling runs only on a node that may write, and such a node resumes it at its periodic call.
func TestDevicePollOnlyWhereWriteSafe(t *testing.T) {
	e := newDeviceEnv(t)
	code := e.start(t)
	e.p.ApproveDevice(code, "heidi")
	e.b.devicePolls.stop("app")

	standby := newBackend(e.clock, oauthclient.NewClient)
	conf := logical.TestBackendConfig()
	conf.StorageView = e.s
	conf.System.(*logical.StaticSystemView).ReplicationStateVal = consts.ReplicationPerformanceStandby
	if err := standby.Setup(context.Background(), conf); err != nil {
		t.Fatal(err)
	}
	initialize(t, standby, e.s)
	if err := standby.periodic(context.Background(), &logical.Request{Storage: e.s}); err != nil {
		t.Fatal(err)
	}
	e.advance(t, 5*time.Second, 0, "pending", "")

	if err := e.b.periodic(context.Background(), &logical.Request{Storage: e.s}); err != nil {
		t.Fatal(err)
	}
	e.advance(t, 0, 1, "authorized", "")
}

// A device flow started while the role is deleted stores nothing and polls nothing.
func TestDeviceStartRacingDelete(t *testing.T) {
	e := newDeviceEnv(t)
	reached, release := make(chan struct{}), make(chan struct{})
	e.p.Intercept = func(_ http.ResponseWriter, r *http.Request) bool {
		if r.URL.Path == "/device_authorization" {
			close(reached)
			<-release
		}
		return false
	}
	done := make(chan *logical.Response)
	go func() {
		resp, _ := requestErr(e.b, e.s, logical.UpdateOperation, "device/app", nil)
		done <- resp
	}()
	<-reached
	mustSucceed(t, request(t, e.b, e.s, logical.DeleteOperation, "roles/app", nil))
	close(release)
	mustFailNaming(t, <-done, "deleted or changed")
	if keys, _ := e.s.List(context.Background(), authzPrefix); len(keys) != 0 {
		t.Fatalf("a flow was stored for the deleted role: %v", keys)
	}
	before := e.p.Requests()
	e.clock.Advance(time.Minute)
	if e.p.Requests() != before {
		t.Fatal("the deleted role's flow was polled")
	}
}

// A role edited or deleted while the approved flow's token request is in flight keeps the edit:
// the token obtained for the role as it was is not stored, and the flow ends.
func TestDeviceApprovedPollRacingRoleEdit(t *testing.T) {
	for _, change := range []string{"edit", "delete"} {
		t.Run(change, func(t *testing.T) {
			e := newDeviceEnv(t)
			code := e.start(t)
			e.p.ApproveDevice(code, "dave")
			reached, release := holdGrant(e.p, "urn:ietf:params:oauth:grant-type:device_code")
			done := make(chan struct{})
			go func() {
				defer close(done)
				e.clock.Advance(5 * time.Second)
			}()
			<-reached
			if change == "edit" {
				mustSucceed(t, request(t, e.b, e.s, logical.UpdateOperation, "roles/app", map[string]any{"scopes": "openid"}))
			} else {
				mustSucceed(t, request(t, e.b, e.s, logical.DeleteOperation, "roles/app", nil))
			}
			close(release)
			<-done
			for k := range e.s.snapshot(t) {
				if strings.HasPrefix(k, tokenPrefix) || (change == "delete" && strings.HasPrefix(k, rolePrefix)) {
					t.Fatalf("%s was stored", k)
				}
			}
			if change == "delete" {
				return
			}
			if got := mustSucceed(t, request(t, e.b, e.s, logical.ReadOperation, "roles/app", nil)).Data["scopes"]; !reflect.DeepEqual(got, []string{"openid"}) {
				t.Fatalf("the edit was lost: scopes %v", got)
			}
			st := e.status(t)
			if st["authorization"] == "authorized" || !strings.Contains(fmt.Sprint(st["last_poll"]), "nothing was stored") {
				t.Fatalf("status: %v", st)
			}
			e.advance(t, time.Minute, 0, fmt.Sprint(st["authorization"]), "")
		})
	}
}
