// Command bench measures banger's boot overhead: the median wall time of
// `banger vm run --rm -- true` against a bare qemu-system-x86_64 boot of the
// same kernel, initramfs and image to the same ready point (the guest agent
// answering a ping), and their ratio; then image pull throughput from a
// loopback registry and ext4 build time per GiB; then the time to make a
// VM's root disk from a 1 GiB and a 16 GiB image with each storage backend
// (copy and reflink on this host, dm in a guest: see rootdisk.go). Run it
// with `make bench`.
package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"log"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"banger/internal/agentclient"
	"banger/internal/config"
	"banger/internal/execx"
	"banger/internal/image"
	"banger/internal/oci"
	"banger/internal/vmm"
	"banger/internal/vmm/qemu"
)

func main() {
	n := flag.Int("n", 7, "runs per measurement (at least 5)")
	fastRuns := flag.Int("fast-runs", 31, "runs per root-disk measurement of reflink and dm (at least 5): millisecond timings need more runs for a stable median")
	guestDM := flag.Bool("guest-dm", true, "time dm root disks in a guest (go test ./test/e2e -run TestGuestDMBench)")
	flag.Parse()
	handleSignals()
	err := run(max(*n, 5), max(*fastRuns, 5), *guestDM)
	cl.runAll()
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func run(n, fastRuns int, guestDM bool) error {
	start := time.Now()
	deb := os.Getenv("BANGER_E2E_KERNEL_DEB")
	if deb == "" {
		return fmt.Errorf("BANGER_E2E_KERNEL_DEB is not set (use make bench)")
	}
	wd, _ := os.Getwd()
	repoDir = wd
	bin := filepath.Join(wd, "bin")
	root, err := os.MkdirTemp("/tmp", "bgb-")
	if err != nil {
		return err
	}
	env := append(os.Environ(),
		"HOME="+filepath.Join(root, "home"), "XDG_CONFIG_HOME="+filepath.Join(root, "config"),
		"XDG_STATE_HOME="+filepath.Join(root, "state"), "XDG_CACHE_HOME="+filepath.Join(root, "cache"),
		"XDG_RUNTIME_DIR="+filepath.Join(root, "run"), "NO_COLOR=1",
		// A banger may run on this host (the quick start leaves its root
		// helper on the default socket and its DNS on the default port):
		// the bench's bangerd never asks that helper, and runs with guest
		// networking off, as bare QEMU does, so it binds no DNS port.
		"BANGER_HELPER_SOCKET="+filepath.Join(root, "no-helper.sock"))
	banger := func(args ...string) error {
		cmd := exec.Command(filepath.Join(bin, "banger"), args...)
		cmd.Env = env
		var se bytes.Buffer
		cmd.Stderr = &se
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("banger %s: %w: %s", strings.Join(args, " "), err, se.String())
		}
		return nil
	}
	cl.add(func() {
		if out, err := exec.Command("pgrep", "-f", filepath.Join(bin, "bangerd")).Output(); err == nil {
			for _, f := range strings.Fields(string(out)) {
				var pid int
				if _, err := fmt.Sscan(f, &pid); err != nil {
					continue
				}
				if e, _ := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid)); bytes.Contains(e, []byte(root)) {
					_ = syscall.Kill(pid, syscall.SIGTERM)
				}
			}
		}
		time.Sleep(300 * time.Millisecond)
		os.RemoveAll(root)
	})
	if err := writeBenchConfig(filepath.Join(root, "config")); err != nil {
		return err
	}
	part := time.Now()
	if err := banger("kernel", "import-deb", deb, "--name", "default"); err != nil {
		return err
	}
	// Warm-up: builds the minimal image and the boot initramfs once.
	if err := banger("vm", "run", "--rm", "--", "true"); err != nil {
		return err
	}

	var bangerTimes, bareTimes []time.Duration
	vmlinux, _ := filepath.Glob(filepath.Join(root, "state", "banger", "kernels", "*", "vmlinux"))
	initrds, _ := filepath.Glob(filepath.Join(root, "cache", "banger", "initrd", "initrd-*.img"))
	rootfs, _ := filepath.Glob(filepath.Join(root, "state", "banger", "images", "*", "rootfs.ext4"))
	if len(vmlinux) != 1 || len(initrds) != 1 || len(rootfs) != 1 {
		return fmt.Errorf("expected one kernel, initrd and image; got %v %v %v", vmlinux, initrds, rootfs)
	}
	// Probe once, as bangerd does; the probe is not part of either timing.
	accel := (&qemu.Driver{ProbeKernel: func() string { return vmlinux[0] }}).Probe(context.Background()).Accel
	// Interleave the two so that host noise hits both alike.
	for i := 0; i < n; i++ {
		t0 := time.Now()
		if err := banger("vm", "run", "--rm", "--", "true"); err != nil {
			return err
		}
		bangerTimes = append(bangerTimes, time.Since(t0))
		d, err := bareBoot(root, vmlinux[0], initrds[0], rootfs[0], accel)
		if err != nil {
			return err
		}
		bareTimes = append(bareTimes, d)
	}
	mb, mq := median(bangerTimes), median(bareTimes)
	fmt.Printf("machine: %d cpus, %s/%s, %s\n", runtime.NumCPU(), runtime.GOOS, runtime.GOARCH, time.Now().Format("2006-01-02"))
	fmt.Printf("banger vm run --rm -- true   median %6.3fs  (n=%d, runs %s)\n", mb.Seconds(), n, list(bangerTimes))
	fmt.Printf("bare qemu boot to agent ping median %6.3fs  (n=%d, runs %s)\n", mq.Seconds(), n, list(bareTimes))
	fmt.Printf("ratio banger/bare: %.2f (target <= 1.25)\n", mb.Seconds()/mq.Seconds())
	fmt.Printf("(boot: took %.1fs)\n\n", time.Since(part).Seconds())
	part = time.Now()
	if err := pullBench(root); err != nil {
		return err
	}
	fmt.Printf("(image pull and build: took %.1fs)\n\n", time.Since(part).Seconds())
	if err := rootDiskBench(root, n, fastRuns, guestDM, accel); err != nil {
		return err
	}
	fmt.Printf("\nbench: took %.1fs in all\n", time.Since(start).Seconds())
	return nil
}

// pullBench measures pulling from a registry on loopback into an empty
// blob cache (download + digest check), and building an ext4 image from
// the pulled layers, per GB of layer content.
func pullBench(root string) error {
	srv := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	defer srv.Close()
	const layers, layerSize = 4, 32 << 20
	img, err := random.Image(layerSize, layers)
	if err != nil {
		return err
	}
	ref := strings.TrimPrefix(srv.URL, "http://") + "/bench/img:v1"
	tag, err := name.NewTag(ref)
	if err != nil {
		return err
	}
	if err := remote.Write(tag, img); err != nil {
		return err
	}
	var pulls []time.Duration
	var pulled *oci.Image
	var total int64
	for i := 0; i < 3; i++ {
		dir := filepath.Join(root, fmt.Sprintf("oci-%d", i))
		c := &oci.Cache{Dir: dir}
		t0 := time.Now()
		if pulled, err = c.Pull(context.Background(), ref, "", nil); err != nil {
			return err
		}
		pulls = append(pulls, time.Since(t0))
		total = 0
		for _, l := range pulled.Layers {
			total += l.Size
		}
		if i < 2 {
			os.RemoveAll(dir)
		}
	}
	mp := median(pulls)
	fmt.Printf("image pull from loopback registry: %d layers, %.0f MiB, median %.3fs = %.0f MiB/s\n",
		layers, float64(total)/(1<<20), mp.Seconds(), float64(total)/(1<<20)/mp.Seconds())
	var srcs []image.LayerSource
	for _, l := range pulled.Layers {
		srcs = append(srcs, image.FileLayer(l.Digest, l.Path))
	}
	work := filepath.Join(root, "ext4")
	if err := os.MkdirAll(work, 0o700); err != nil {
		return err
	}
	t0 := time.Now()
	res, err := image.ImportLayers(context.Background(), srcs, filepath.Join(work, "rootfs.ext4"), image.BuildOptions{WorkDir: work})
	if err != nil {
		return err
	}
	d := time.Since(t0)
	gb := float64(total) / (1 << 30)
	fmt.Printf("ext4 build from those layers: %.3fs for %.0f MiB of content (image %.0f MiB) = %.1fs per GiB\n",
		d.Seconds(), float64(total)/(1<<20), float64(res.Size)/(1<<20), d.Seconds()/gb)
	return nil
}

// bareBoot launches QEMU with the same arguments banger uses (same kernel,
// initramfs, root image copy and work disk) and waits for the agent ping.
func bareBoot(root, vmlinux, initrd, rootfs, accel string) (time.Duration, error) {
	dir, err := os.MkdirTemp(root, "bare-")
	if err != nil {
		return 0, err
	}
	defer os.RemoveAll(dir)
	rootCopy := filepath.Join(dir, "root.ext4")
	work := filepath.Join(dir, "work.ext4")
	if err := image.CloneFile(rootfs, rootCopy); err != nil {
		return 0, err
	}
	if err := image.MakeWorkDisk(context.Background(), work, 8<<30); err != nil {
		return 0, err
	}
	// The same sizes banger gives a VM with no flags.
	def := config.Config{}.ResolveDefaults(config.ProbeHost())
	spec := vmm.Spec{
		ID: "bare", VCPU: def.VCPU.Value, MemoryMiB: def.MemoryMiB.Value, Kernel: vmlinux, Initrd: initrd,
		Cmdline: "console=ttyS0 root=/dev/vda rw rootfstype=ext4 panic=-1 quiet loglevel=3 banger.work=/dev/vdb banger.hostname=bare",
		Drives:  []vmm.Drive{{ID: "root", Path: rootCopy}, {ID: "work", Path: work}},
	}
	agentSock, consoleSock := filepath.Join(dir, "a.sock"), filepath.Join(dir, "c.sock")
	bin, err := execx.LookPath("qemu-system-x86_64")
	if err != nil {
		return 0, err
	}
	t0 := time.Now()
	cmd := exec.Command(bin, qemu.Args(spec, accel, qemu.HostTSCKHz(), agentSock, consoleSock)...)
	if err := cmd.Start(); err != nil {
		return 0, err
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	exited := make(chan struct{})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	con, err := vmm.WaitForSocket(ctx, consoleSock, exited)
	if err != nil {
		return 0, err
	}
	go func() { _, _ = io.Copy(io.Discard, con) }()
	conn, err := vmm.WaitForSocket(ctx, agentSock, exited)
	if err != nil {
		return 0, err
	}
	sess, err := agentclient.Handshake(ctx, conn)
	if err != nil {
		return 0, err
	}
	defer sess.Close()
	if _, err := sess.Ping(ctx); err != nil {
		return 0, err
	}
	return time.Since(t0), nil
}

func median(ds []time.Duration) time.Duration {
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[len(s)/2]
}

func list(ds []time.Duration) string {
	parts := make([]string, len(ds))
	for i, d := range ds {
		parts[i] = fmt.Sprintf("%.2f", d.Seconds())
	}
	return strings.Join(parts, " ")
}

// writeBenchConfig writes the bench's own config.toml under configHome:
// guest networking off.
func writeBenchConfig(configHome string) error {
	dir := filepath.Join(configHome, "banger")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("write bench config: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "config.toml"), []byte("[network]\nenabled = false\n"), 0o600); err != nil {
		return fmt.Errorf("write bench config: %w", err)
	}
	return nil
}
