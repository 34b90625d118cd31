// Package dmsnap gives each VM a copy-on-write root disk: a device-mapper
// snapshot (`snapshot <base-loop> <cow-loop> P 8`) of a read-only base
// image, whose writes land in a per-VM sparse COW file. It is meant to run
// in the root helper.
//
// The package has three layers:
//
//   - pure builders (tables, losetup and dmsetup argv, the dm ioctl
//     encoding), tested by tables;
//   - a Backend, the only part that touches the kernel: IoctlBackend (loop
//     and device-mapper ioctls, no external program) or ExecBackend
//     (losetup and dmsetup through an argv-only Runner); dmsnaptest holds a
//     stateful fake of both;
//   - a Manager, which drives a Backend through a crash-safe state machine
//     recorded in a journal (intent written before each step, result
//     after) and reconciles the journal with the kernel at start-up.
//
// Names carry banger's prefix (banger-<vm id>), dm devices also carry a
// uuid recorded before they are made (the proof of ownership used to
// remove them), and backing files must lie under the Manager's root,
// reached without following symlinks. docs/storage.md describes the states
// and the reconcile.
package dmsnap
