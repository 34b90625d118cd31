package vm

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"banger/internal/api"
	"banger/internal/privop"
)

// removeOrphanTaps runs at start-up, after the recorded VMs were adopted or
// marked stopped: it deletes every tap the helper still holds that no live
// VM of the store claims (a crash of bangerd or the helper between a VM's
// end and its tap's deletion leaves one behind), then rebuilds the
// firewall once so no rule for those taps' guests remains. It logs each
// tap it removes. Failures are logged, not returned: a leftover tap must
// not keep bangerd from serving.
func (s *Service) removeOrphanTaps(ctx context.Context) {
	if s.net == nil {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	held, err := s.helperTaps(ctx)
	if err != nil {
		s.log.Warn("list the helper's taps", "err", err)
		return
	}
	if len(held) == 0 {
		return
	}
	vms, err := s.st.ListVMs(ctx)
	if err != nil {
		s.log.Warn("list vms for orphaned taps", "err", err)
		return
	}
	live := map[string]bool{}
	for _, v := range vms {
		switch v.State {
		case api.StateRunning, api.StateStarting, api.StateStopping:
			// A VM adopted mid-stop still has its VMM on the tap; its
			// stop deletes the tap.
			live[tapName(v.ID)] = true
			if v.Runtime.Tap != "" {
				live[v.Runtime.Tap] = true
			}
		}
	}
	removed := 0
	for _, tap := range held {
		if live[tap] {
			continue
		}
		if err := s.net.deleteTap(ctx, tap); err != nil {
			s.log.Warn("remove orphaned tap", "tap", tap, "err", err)
			continue
		}
		s.log.Info("removed orphaned tap " + tap + ": no VM holds it")
		removed++
	}
	if removed == 0 {
		return
	}
	if err := s.refreshFirewall(ctx); err != nil {
		s.log.Warn("refresh firewall after removing orphaned taps", "err", err)
	}
}

// helperTaps asks the helper which taps its ledger holds. Names that are
// not banger taps are dropped: the answer is the helper's, but bangerd
// only ever asks to delete what it could have created.
func (s *Service) helperTaps(ctx context.Context) ([]string, error) {
	raw, _, err := s.net.Helper.Call(ctx, privop.Ping{})
	if err != nil {
		return nil, fmt.Errorf("ping helper: %w", err)
	}
	var res privop.PingResult
	if err := json.Unmarshal(raw, &res); err != nil {
		return nil, fmt.Errorf("decode helper ping: %w", err)
	}
	var taps []string
	for _, t := range res.Taps {
		if err := privop.ValidTapName(t); err != nil {
			s.log.Warn("helper reported a tap that is not banger's", "tap", t, "err", err)
			continue
		}
		taps = append(taps, t)
	}
	return taps, nil
}
