package vmm

import (
	"context"
	"strings"
	"testing"
)

type plainDriver struct{ Driver }

type limitedDriver struct {
	plainDriver
	lim      Limits
	powerOff bool
}

func (d limitedDriver) Limits() Limits        { return d.lim }
func (d limitedDriver) PowerOffEndsVMM() bool { return d.powerOff }
func (plainDriver) Name() string              { return "plain" }
func (plainDriver) Probe(context.Context) Probe {
	return Probe{}
}

func TestLimitsCheck(t *testing.T) {
	fc := Limits{MaxVCPU: 32}
	mem := Limits{MaxVCPU: 4, MaxMemMiB: 2048}
	for _, tc := range []struct {
		name      string
		lim       Limits
		vcpu, mem int
		want      []string // empty: accepted
	}{
		{"at the vcpu limit", fc, 32, 1 << 20, nil},
		{"one vcpu over", fc, 33, 512, []string{"fc", "32", "33", "vCPU"}},
		{"no limits", Limits{}, 1000, 1 << 30, nil},
		{"at the memory limit", mem, 4, 2048, nil},
		{"memory over", mem, 4, 2049, []string{"fc", "2048", "2049", "MiB"}},
		{"vcpu checked first", mem, 5, 4096, []string{"4 vCPUs", "5"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.lim.Check("fc", tc.vcpu, tc.mem)
			if len(tc.want) == 0 {
				if err != nil {
					t.Fatalf("Check = %v, want nil", err)
				}
				return
			}
			if err == nil {
				t.Fatal("Check accepted it")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Check = %q, want it to name %q", err, w)
				}
			}
		})
	}
}

func TestDriverProperties(t *testing.T) {
	if got := LimitsOf(plainDriver{}); got != (Limits{}) {
		t.Errorf("LimitsOf a driver without limits = %+v", got)
	}
	if !PowerOffEndsVMM(plainDriver{}) {
		t.Error("a driver that says nothing must be stopped by a power-off")
	}
	d := limitedDriver{lim: Limits{MaxVCPU: 7}}
	if got := LimitsOf(d); got.MaxVCPU != 7 {
		t.Errorf("LimitsOf = %+v, want MaxVCPU 7", got)
	}
	if PowerOffEndsVMM(d) {
		t.Error("PowerOffEndsVMM ignored the driver's answer")
	}
}
