package pool

import "time"

// Observer is told of the events metrics are made of. The manager calls
// it synchronously; implementations must be quick and safe for concurrent
// use.
type Observer interface {
	// VMStarted: a VM's monitor started.
	VMStarted(pool string)
	// VMFailed: a VM ended without its job done; reason is one of the
	// Reason* constants, never free text.
	VMFailed(pool, reason string)
	// Provisioned: from the VM's creation to its runner registered.
	Provisioned(pool string, d time.Duration)
	// Booted: from the monitor started, or for a restore (whose monitor
	// starts before its runner is registered) from its handover, to the
	// runner ready.
	Booted(pool string, d time.Duration)
	// JobDone: from the VM busy to its runner exited.
	JobDone(pool string, d time.Duration)
	// QueueWait: a job left the queue after waiting d.
	QueueWait(pool string, d time.Duration)
	// UnservedJob: a queued job no pool can serve (counted once per job).
	UnservedJob()
	// RecordUnsaved: a VM's record could not be saved, so the disk lags
	// the manager's view until the reconcile loop saves it again (told
	// once per VM and outage, not per failed attempt).
	RecordUnsaved(pool string)
	// HostShortage: a VM could not be made for lack of a host resource;
	// cause is one of the Short* constants.
	HostShortage(pool, cause string)
}

// Reasons a VM fails, the bounded label set of the failure metric.
const (
	ReasonSetup        = "setup"         // address, TAP, boot files
	ReasonRegister     = "register"      // the forge refused or failed
	ReasonStart        = "start"         // the monitor did not start
	ReasonBootTimeout  = "boot_timeout"  // runner not ready in time
	ReasonJobTimeout   = "job_timeout"   // job ran past the limit
	ReasonCrashed      = "crashed"       // the monitor or guest died
	ReasonRunner       = "runner_exit"   // runner exited non-zero
	ReasonStopped      = "stopped"       // drain, scale-down or an operator
	ReasonHostResource = "host_resource" // the host lacked disk, memory or addresses
	ReasonRecycled     = "recycled"      // ready for timeouts.job, never known busy
)

type nopObserver struct{}

func (nopObserver) VMStarted(string)                  {}
func (nopObserver) VMFailed(string, string)           {}
func (nopObserver) Provisioned(string, time.Duration) {}
func (nopObserver) Booted(string, time.Duration)      {}
func (nopObserver) JobDone(string, time.Duration)     {}
func (nopObserver) QueueWait(string, time.Duration)   {}
func (nopObserver) UnservedJob()                      {}
func (nopObserver) RecordUnsaved(string)              {}
func (nopObserver) HostShortage(string, string)       {}
