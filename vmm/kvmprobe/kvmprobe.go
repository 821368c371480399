// Package kvmprobe tells whether /dev/kvm can really run a guest. Opening
// the device is not enough: a host with a paravirtual-only KVM (PVM) or a
// broken nested setup opens it fine and then hangs stock guests, or
// refuses the vCPU state a VMM sets. The probe creates a VM with one
// vCPU, gives it the CPUID KVM supports and the feature MSRs KVM
// reports (those a VMM such as QEMU writes to every vCPU), runs a few
// real-mode instructions in it, and checks they executed: an OUT to a
// port with a known value, then HLT.
package kvmprobe

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"runtime"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// ioctl numbers from linux/kvm.h.
const (
	kvmGetAPIVersion       = 0xAE00
	kvmGetSupportedCPUID   = 0xC008AE05
	kvmSetCPUID2           = 0x4008AE90
	kvmGetMSRFeatureList   = 0xC004AE0A
	kvmGetMSRs             = 0xC008AE88
	kvmSetMSRs             = 0x4008AE89
	kvmCreateVM            = 0xAE01
	kvmGetVCPUMmapSize     = 0xAE04
	kvmCreateVCPU          = 0xAE41
	kvmSetUserMemoryRegion = 0x4020AE46
	kvmRun                 = 0xAE80
	kvmGetRegs             = 0x8090AE81
	kvmSetRegs             = 0x4090AE82
	kvmGetSregs            = 0x8138AE83
	kvmSetSregs            = 0x4138AE84

	exitIO  = 2
	exitHLT = 5
)

// guestCode is: mov al, 0x42; out 0x10, al; hlt.
var guestCode = []byte{0xB0, 0x42, 0xE6, 0x10, 0xF4}

const guestAddr = 0x1000

// Result says whether KVM runs guests, and if not, why.
type Result struct {
	Usable bool
	Reason string
	// RefusedMSR: the vCPU ran the probe's code but refused a feature
	// MSR KVM itself reports. QEMU aborts on such a KVM; a VMM that
	// writes fewer MSRs might not, so a caller that can ask the VMM
	// itself should.
	RefusedMSR bool
}

func (r Result) String() string {
	if r.Usable {
		return "usable: a test vCPU took its feature MSRs and ran guest code"
	}
	return "not usable: " + r.Reason
}

// Probe runs the check on device (normally /dev/kvm), giving up when ctx
// ends (a vCPU that never returns is the PVM symptom).
func Probe(ctx context.Context, device string) Result {
	type out struct {
		err error
	}
	done := make(chan out, 1)
	tid := make(chan int, 1)
	go func() {
		runtime.LockOSThread() // the thread stays locked: it may be interrupted
		tid <- unix.Gettid()
		done <- out{run(device)}
	}()
	t := <-tid
	select {
	case o := <-done:
		if o.err != nil {
			var refused msrRefused
			return Result{Reason: o.err.Error(), RefusedMSR: errors.As(o.err, &refused)}
		}
		return Result{Usable: true}
	case <-ctx.Done():
		// Kick the vCPU thread out of KVM_RUN; it returns EINTR.
		_ = unix.Tgkill(os.Getpid(), t, unix.SIGURG)
		select {
		case <-done:
		case <-time.After(time.Second):
		}
		return Result{Reason: "the test vCPU did not finish (paravirtual-only or broken KVM)"}
	}
}

// ioctl takes arg as a pointer and converts it in the Syscall call
// itself, so what it points to is kept in place for the call.
func ioctl(fd int, req uintptr, arg unsafe.Pointer) (uintptr, error) {
	r, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), req, uintptr(arg))
	if e != 0 {
		return r, e
	}
	return r, nil
}

func run(device string) error {
	kvm, err := unix.Open(device, unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open %s: %w", device, err)
	}
	defer unix.Close(kvm)
	if v, err := ioctl(kvm, kvmGetAPIVersion, nil); err != nil || v != 12 {
		return fmt.Errorf("KVM API version %d (%v), want 12", v, err)
	}
	vmfd, err := ioctl(kvm, kvmCreateVM, nil)
	if err != nil {
		return fmt.Errorf("create VM: %w", err)
	}
	defer unix.Close(int(vmfd))

	mem, err := unix.Mmap(-1, 0, 0x1000, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_ANONYMOUS)
	if err != nil {
		return fmt.Errorf("guest memory: %w", err)
	}
	defer unix.Munmap(mem)
	copy(mem, guestCode)
	region := struct {
		slot, flags           uint32
		guestPhys, size, user uint64
	}{0, 0, guestAddr, 0x1000, uint64(uintptr(unsafe.Pointer(&mem[0])))}
	if _, err := ioctl(int(vmfd), kvmSetUserMemoryRegion, unsafe.Pointer(&region)); err != nil {
		return fmt.Errorf("set memory region: %w", err)
	}
	vcpu, err := ioctl(int(vmfd), kvmCreateVCPU, nil)
	if err != nil {
		return fmt.Errorf("create vCPU: %w", err)
	}
	defer unix.Close(int(vcpu))
	size, err := ioctl(kvm, kvmGetVCPUMmapSize, nil)
	if err != nil {
		return fmt.Errorf("vCPU mmap size: %w", err)
	}
	runMem, err := unix.Mmap(int(vcpu), 0, int(size), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return fmt.Errorf("map vCPU run area: %w", err)
	}
	defer unix.Munmap(runMem)
	refused, err := setUpAsAVMM(kvm, int(vcpu))
	if err != nil {
		return err
	}

	var sregs [312]byte // struct kvm_sregs; cs is first: base u64, limit u32, selector u16
	if _, err := ioctl(int(vcpu), kvmGetSregs, unsafe.Pointer(&sregs[0])); err != nil {
		return fmt.Errorf("get sregs: %w", err)
	}
	binary.LittleEndian.PutUint64(sregs[0:], 0)
	binary.LittleEndian.PutUint16(sregs[12:], 0)
	if _, err := ioctl(int(vcpu), kvmSetSregs, unsafe.Pointer(&sregs[0])); err != nil {
		return fmt.Errorf("set sregs: %w", err)
	}
	var regs [144]byte // struct kvm_regs: 16 GPRs, rip, rflags
	binary.LittleEndian.PutUint64(regs[128:], guestAddr)
	binary.LittleEndian.PutUint64(regs[136:], 0x2)
	if _, err := ioctl(int(vcpu), kvmSetRegs, unsafe.Pointer(&regs[0])); err != nil {
		return fmt.Errorf("set regs: %w", err)
	}

	sawOut := false
	for i := 0; i < 4; i++ {
		if _, err := ioctl(int(vcpu), kvmRun, nil); err != nil {
			if errors.Is(err, unix.EINTR) {
				return errors.New("the test vCPU did not finish (paravirtual-only or broken KVM)")
			}
			return fmt.Errorf("run vCPU: %w", err)
		}
		switch reason := binary.LittleEndian.Uint32(runMem[8:]); reason {
		case exitIO:
			port := binary.LittleEndian.Uint16(runMem[34:])
			off := binary.LittleEndian.Uint64(runMem[40:])
			if runMem[32] != 1 || port != 0x10 || off >= uint64(len(runMem)) || runMem[off] != 0x42 {
				return fmt.Errorf("test vCPU wrote the wrong I/O (port %#x)", port)
			}
			sawOut = true
		case exitHLT:
			if !sawOut {
				return errors.New("test vCPU halted without running its code")
			}
			if refused != nil {
				return *refused // the code ran; the MSR is what is wrong
			}
			return nil
		default:
			return fmt.Errorf("test vCPU exited with reason %d", reason)
		}
	}
	return errors.New("test vCPU did not halt")
}

// msrEntry is struct kvm_msr_entry.
type msrEntry struct {
	index, _ uint32
	data     uint64
}

// cpuid2 is struct kvm_cpuid2 with room for 256 entries of struct
// kvm_cpuid_entry2 (function, index, flags, eax..edx, 3 reserved).
type cpuid2 struct {
	n, _    uint32
	entries [256][10]uint32
}

// msrRefused: the vCPU refused feature MSR index = data.
type msrRefused struct {
	index uint32
	data  uint64
}

func (e msrRefused) Error() string {
	return fmt.Sprintf("the test vCPU refused feature MSR %#x = %#x, which KVM itself reports (QEMU aborts on it; paravirtual-only or broken KVM)", e.index, e.data)
}

// setUpAsAVMM gives vcpu the CPUID KVM supports (KVM_GET_SUPPORTED_CPUID,
// what QEMU's -cpu host starts from; KVM takes a feature MSR only for a
// vCPU whose CPUID has the feature), then, one at a time, each feature
// MSR KVM lists (KVM_GET_MSR_FEATURE_INDEX_LIST) with the value KVM
// reports for it, but the VMX capability MSRs: those matter to nested
// guests only, and KVM refuses some of them (the non-true controls, the
// FIXED1 ones) from any VMM. It returns the first MSR refused, if any; a
// kernel without the list has no such MSRs to refuse.
func setUpAsAVMM(kvm, vcpu int) (*msrRefused, error) {
	c := &cpuid2{n: uint32(len(cpuid2{}.entries))}
	if _, err := ioctl(kvm, kvmGetSupportedCPUID, unsafe.Pointer(c)); err != nil {
		return nil, fmt.Errorf("read the supported CPUID: %w", err)
	}
	if _, err := ioctl(vcpu, kvmSetCPUID2, unsafe.Pointer(c)); err != nil {
		return nil, fmt.Errorf("set the test vCPU's CPUID: %w", err)
	}
	var list [1 + 256]uint32
	list[0] = 256
	if _, err := ioctl(kvm, kvmGetMSRFeatureList, unsafe.Pointer(&list[0])); err != nil {
		if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOTTY) || errors.Is(err, unix.E2BIG) {
			return nil, nil // no list, or one longer than any kernel's: a VMM decides
		}
		return nil, fmt.Errorf("list feature MSRs: %w", err)
	}
	for _, index := range list[1 : 1+min(list[0], 256)] {
		if index >= vmxFirstMSR && index <= vmxLastMSR {
			continue
		}
		msrs := struct {
			n, _  uint32
			entry msrEntry
		}{n: 1, entry: msrEntry{index: index}}
		if n, err := ioctl(kvm, kvmGetMSRs, unsafe.Pointer(&msrs)); err != nil || n != 1 {
			continue // not readable on this host: no VMM writes it
		}
		n, err := ioctl(vcpu, kvmSetMSRs, unsafe.Pointer(&msrs))
		if err != nil {
			return nil, fmt.Errorf("set feature MSR %#x: %w", index, err)
		}
		if n != 1 {
			return &msrRefused{index, msrs.entry.data}, nil
		}
	}
	return nil, nil
}

// The VMX capability MSRs (IA32_VMX_BASIC to IA32_VMX_VMFUNC).
const (
	vmxFirstMSR = 0x480
	vmxLastMSR  = 0x491
)
