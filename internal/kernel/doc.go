// Package kernel owns banger's kernel artifacts: it turns a distribution
// kernel package (.deb) or a user-supplied vmlinux/bzImage (plus optional
// initrd) into a content-addressed directory that a VMM can boot directly,
// and assembles the per-boot initramfs that puts banger's agent at /init.
//
// Firecracker (and banger's QEMU microvm path, which mirrors it) boots an
// uncompressed ELF vmlinux, so distribution bzImages are unpacked here. A
// distribution kernel also builds its virtio drivers as modules, so the
// artifact carries a small cpio with exactly the modules the agent must load
// (lib/modules/banger.list, dependencies first) to reach its disk, network,
// console and vsock.
//
// Everything is pure Go: no external tools are executed, so import works on a
// bare host and produces identical bytes for identical input.
package kernel
