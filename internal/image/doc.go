// Package image owns banger's root filesystem images: building an ext4 file
// from a rootfs tarball, OCI image layers, a directory, the host's static
// busybox (the embedded minimal image) or debootstrap, capturing each
// image's work seed (its /root, as a tar), and preparing the per-VM disks
// cloned from the image or built from its seed.
//
// An image is just an ext4 root filesystem. banger's own initramfs mounts it
// as the guest's root and starts either its systemd or banger's agent, so
// nothing is injected here and a stored image is never modified.
//
// Everything is built without root and without mounting: files are staged in
// a private directory, mkfs.ext4 -d copies them, and one batched debugfs pass
// then gives every inode the owner, mode and type the source asked for
// (a non-root stager can neither chown nor mknod). The manifest kept while
// staging is the source of truth for that pass. Work disks are built the
// same way from the seed, and the seed is read back out of the finished
// ext4 with debugfs: one way for every source an image can come from.
package image
