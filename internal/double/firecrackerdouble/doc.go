// Package firecrackerdouble stands in for the firecracker and jailer binaries on
// hosts where Firecracker cannot run (no usable KVM), so the driver's real
// code path (process, jail, API calls, console, exit) runs end to end.
// It is a test double: nothing in the product imports it.
//
// The firecracker double serves the API on --api-sock and checks every
// request against Firecracker's own API description
// (vmm/firecracker/testdata/firecracker-api-1.17.yaml, through apispec):
// unknown method or path, bad path id, body not matching its schema
// (unknown fields, wrong types, missing required fields, bad enum values,
// out-of-range numbers, duplicate keys) and calls in the wrong phase get
// 400 with a fault_message, as Firecracker answers them. On top of the
// description it applies the checks Firecracker makes when it accepts a
// resource: boot files and drive files must open (as the jailed user,
// inside the chroot), the TAP must attach (as that user), path and body
// ids must agree,
// InstanceStart needs a boot source. Every request and its answer can be
// recorded (FCDOUBLE_RECORD), so tests can show the driver's requests
// were all valid.
//
// The MMDS's set-up is modelled: PUT /mmds/config (pre-boot only, as the
// description says; at least one interface, each already configured, a
// link-local address, as Firecracker checks) and PUT /mmds (the data
// store, before or after InstanceStart). The double cannot serve the MMDS
// to the guest, since QEMU boots it: it keeps what was PUT, for tests to
// inspect through Server.MMDS in process or, like every request, in the
// request record (the bodies of the accepted PUTs). PATCH and GET /mmds
// are not modelled.
//
// On InstanceStart it boots the configured kernel, initrd, drives and TAP
// with QEMU -M microvm (TCG without a usable KVM), with the QEMU driver's
// own argument building. Like Firecracker, it reads the initrd whole at
// InstanceStart and never again (QEMU gets that copy, not the file, which
// it would read only when the guest's firmware asks), so a caller may
// empty or remove the file once InstanceStart has answered. The board
// behaves like Firecracker's where the
// guest can tell: an i8042 whose reset line ends the VMM (reboot=k), ACPI
// device discovery but no ACPI power-off (a guest that powers off halts
// and the VMM runs on, as Firecracker does), the serial console on
// stdout, and each drive's virtio block serial (/sys/block/vdX/serial) the
// id Firecracker makes from its backing file's device and inode numbers
// (see BlockID), not its drive_id. Differences, all because QEMU boots the guest:
//   - the kernel must be what QEMU boots (a bzImage such as Debian's
//     vmlinuz), where Firecracker wants an uncompressed ELF vmlinux;
//   - the TSC hint QEMU's TCG needs is added to the kernel command line;
//   - no MMDS answers on 169.254.169.254 in the guest (see above);
//   - the vsock device's host end is modelled (its socket, the CONNECT
//     handshake, kept by snapshots) but no guest has the device:
//     FCDOUBLE_VSOCK_GUEST stands in for the guest's listening ports
//     (see vsock.go); snapshots restore the configuration, not a guest;
//   - a root drive gets root=/dev/vda as Firecracker gives it, but drive
//     rate limiters, balloon, logger and metrics are
//     not modelled: their (valid) requests are refused with a fault that
//     says so, so a test never passes by ignoring them.
//
// The jailer double follows the jailer's command-line contract and its
// steps (validate, make the chroot, copy the exec file in, create
// /dev/kvm and /dev/net/tun, cgroup v2 directories and values found
// through the mount table, rlimits, chown, drop to uid/gid, exec
// firecracker with --id) but does not pivot_root: QEMU and its libraries
// live outside the chroot. It tells the firecracker double the chroot
// instead (FCDOUBLE_ROOT), which resolves every API path in it, so a path
// that would not exist in a real jail fails here too. It keeps the
// FCDOUBLE_* environment and the request record's descriptor, where the
// real jailer clears the environment and closes every descriptor but 0-2.
//
// Settings (environment): FCDOUBLE_SPEC (the description; default: the
// path compiled in by Build), FCDOUBLE_QEMU (default qemu-system-x86_64),
// FCDOUBLE_ACCEL (kvm or tcg; default: detected), FCDOUBLE_BOOT=none
// (accept InstanceStart without booting, for set-up benchmarks),
// FCDOUBLE_RECORD (append one JSON line per request), FCDOUBLE_VSOCK_GUEST
// (the guest's vsock ports, see above), FCDOUBLE_PROC_MOUNTS
// (the jailer's mount table, for a stand-in cgroup hierarchy), and one
// fault for tests: FCDOUBLE_HANG="PUT /actions" (a method and path) is a
// hung VMM that never answers that request.
package firecrackerdouble
