package client

import (
	"context"
	"net/http"
	"net/url"

	"banger/internal/api"
)

// VMStats takes one sample of what a VM costs.
func (c *Client) VMStats(ctx context.Context, name string) (api.VMStats, error) {
	var st api.VMStats
	err := c.Do(ctx, http.MethodGet, "/v1/vms/"+url.PathEscape(name)+"/stats", nil, &st)
	return st, err
}
