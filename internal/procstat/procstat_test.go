package procstat

import (
	"os"
	"testing"
)

func TestParse(t *testing.T) {
	// utime 1500, stime 250, start time 987654.
	const rest = " S 1 4242 4242 0 -1 4194560 12345 0 0 0 1500 250 0 0 20 0 3 0 987654 1234567890 7000 18446744073709551615 1 1 0 0 0 0 0 4096 0 0 0 0 17 2 0 0 0 0 0"
	want := Stat{State: 'S', PPID: 1, Flags: 4194560, UTime: 1500, STime: 250, StartTime: 987654}
	cases := []struct {
		name string
		text string
		ok   bool
	}{
		{"qemu", "4242 (qemu-system-x86)" + rest + "\n", true},
		{"comm with spaces and parentheses", "4242 (a) b (c d)" + rest, true},
		{"comm that looks like fields", "4242 (1 2 3 4 5 6 7 8 9 10 11 12 13)" + rest, true},
		{"just enough fields", "4242 (x) S 1 4242 4242 0 -1 4194560 12345 0 0 0 1500 250 0 0 20 0 3 0 987654", true},
		{"no comm", "4242 qemu S 1", false},
		{"truncated before the start time", "4242 (qemu) S 1 4242 4242 0 -1 4194560 12345 0 0 0 1500 250 0", false},
		{"utime not a number", "4242 (qemu) S 1 4242 4242 0 -1 4194560 12345 0 0 0 x 250 0 0 20 0 3 0 987654", false},
		{"flags not a number", "4242 (qemu) S 1 4242 4242 0 -1 0x400100 12345 0 0 0 1500 250 0 0 20 0 3 0 987654", false},
		{"start time not a number", "4242 (qemu) S 1 4242 4242 0 -1 4194560 12345 0 0 0 1500 250 0 0 20 0 3 0 soon", false},
		{"state of two letters", "4242 (qemu) SS 1 4242 4242 0 -1 4194560 12345 0 0 0 1500 250 0 0 20 0 3 0 987654", false},
		{"empty", "", false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := Parse([]byte(c.text))
			if !c.ok {
				if err == nil {
					t.Fatalf("Parse accepted %q: %+v", c.text, got)
				}
				return
			}
			if err != nil || got != want {
				t.Fatalf("Parse = %+v, %v; want %+v", got, err, want)
			}
		})
	}
	if (Stat{Flags: 4194560}).KernelThread() || !(Stat{Flags: 0x00208040}).KernelThread() {
		t.Error("KernelThread does not read PF_KTHREAD")
	}
	if s := (Stat{UTime: 150, STime: 50}); s.CPUSeconds() != 2 {
		t.Errorf("CPUSeconds = %v", s.CPUSeconds())
	}
}

func TestReadSelf(t *testing.T) {
	s, err := Read(os.Getpid())
	if err != nil || s.StartTime == 0 || s.Gone() || s.PPID != os.Getppid() {
		t.Fatalf("Read(self) = %+v, %v", s, err)
	}
	if _, err := Read(0); err == nil {
		t.Error("read a stat for pid 0")
	}
}
