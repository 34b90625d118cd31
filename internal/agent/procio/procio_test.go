package procio

import (
	"os"
	"sync"
	"testing"
	"time"
)

// A writer that never closes its end (a background grandchild) must not
// hold Drain past the grace period.
func TestDrainGivesUpAfterGrace(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	var pumps sync.WaitGroup
	pumps.Add(1)
	go func() {
		defer pumps.Done()
		buf := make([]byte, 16)
		for {
			if _, err := r.Read(buf); err != nil {
				return
			}
		}
	}()
	start := time.Now()
	Drain(&pumps, []*os.File{r}, 100*time.Millisecond)
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("Drain took %s", d)
	}
}

func TestDrainReturnsAtEOF(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	var pumps sync.WaitGroup
	pumps.Add(1)
	go func() {
		defer pumps.Done()
		buf := make([]byte, 16)
		for {
			if _, err := r.Read(buf); err != nil {
				return
			}
		}
	}()
	w.Close()
	start := time.Now()
	Drain(&pumps, []*os.File{r}, time.Hour)
	if time.Since(start) > 5*time.Second {
		t.Fatal("Drain waited for the grace period after EOF")
	}
}
