package oauth

import (
	"context"
	"net/http"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"
)

func pathMetrics(b *backend) *framework.Path {
	op := operation("Read the mount's metrics in the Prometheus text format.", b.pathMetricsRead, http.StatusOK, nil)
	op.Responses[http.StatusOK][0].MediaType = metricsContentType
	return &framework.Path{
		Pattern:         "metrics$",
		DisplayAttrs:    &framework.DisplayAttributes{OperationPrefix: "oauth", OperationVerb: "read", OperationSuffix: "metrics"},
		Operations:      map[logical.Operation]framework.OperationHandler{logical.ReadOperation: op},
		HelpSynopsis:    pathMetricsHelpSyn,
		HelpDescription: pathMetricsHelpDesc,
	}
}

var metricsContentType = string(metricsFormat)

func (b *backend) pathMetricsRead(ctx context.Context, req *logical.Request, _ *framework.FieldData) (*logical.Response, error) {
	body, err := b.exposition(ctx, req.Storage)
	if err != nil {
		return nil, err
	}
	return &logical.Response{Data: map[string]any{
		logical.HTTPStatusCode:  http.StatusOK,
		logical.HTTPContentType: metricsContentType,
		logical.HTTPRawBody:     body,
	}}, nil
}

const pathMetricsHelpSyn = `Read the mount's metrics (Prometheus text format).`

const pathMetricsHelpDesc = `
Answers the mount's metrics in the Prometheus text exposition format: grants by role, grant type
and outcome, grant latency, failures by kind, creds reads by result, each role's seconds left and
Retry-After, and the refresher's queue size, lag and tick duration. Like sys/metrics it needs a
Vault token: give Prometheus one whose policy can read this path. Set the config's
metrics_role_labels=false to leave role names off (for mounts with many thousand roles); the
per-role gauges then report the least time left and the longest Retry-After of all roles.
`
