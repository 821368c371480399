// Package catalog names the drivers this build has: the VMM drivers a
// configuration's vmm.driver may pick and the forge types its forges may
// have. It is the one list of them: config checks a file against it, and
// the daemon builds each driver from the factory it keys by the same
// name (its test fails when a name has no factory or a factory no name).
//
// It exists because the two that need the names must not import each
// other the other way round: the daemon imports config, so config cannot
// ask the daemon. It holds names only and imports nothing, so that the
// configuration, `fireactions validate` and the docs stay free of the
// drivers themselves.
package catalog

// The VMM drivers.
const (
	QEMU        = "qemu"
	Firecracker = "firecracker"
)

// The forge types.
const (
	Gitea  = "gitea"
	GitHub = "github"
	GitLab = "gitlab"
)

// VMMs are the VMM drivers, in the order a configuration error lists them.
func VMMs() []string { return []string{QEMU, Firecracker} }

// WarmVMMs are the VMM drivers whose machines save and restore guests
// (vmm.Saver, whose machines are vmm.Warm): the ones a pool's warm_start
// may use. The daemon's test builds every driver and fails when this
// list and the drivers that are Savers differ.
func WarmVMMs() []string { return []string{QEMU, Firecracker} }

// Forges are the forge types, in the order a configuration error lists
// them.
func Forges() []string { return []string{Gitea, GitHub, GitLab} }
