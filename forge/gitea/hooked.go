package gitea

import (
	"time"

	"github.com/nixos-fireactions/nixos-fireactions/forge"
)

// hookedJob is a job a webhook delivery said joined the scope's queue.
type hookedJob struct {
	job forge.Job
	at  time.Time // when the delivery came
}

// NotifyQueue implements forge.QueueNotifier: notify is told each job of
// the scope that a webhook delivery says joined or left the queue, as it
// comes; such a delivery kicks nothing. The poll (QueuedJobs) stays the
// authority.
func (f *Forge) NotifyQueue(notify func(forge.QueueChange)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.notify = notify
}

// mergeHooked merges the jobs deliveries reported with a read of the
// queue that began at readAt: Gitea's API is the authority, so a hooked
// job the read does not list, whose delivery came before the read began,
// has left the queue (its leaving delivery lost) and is dropped; one that
// came during the read is kept, as the read may predate it.
func (f *Forge) mergeHooked(read []forge.Job, readAt time.Time) []forge.Job {
	listed := make(map[string]bool, len(read))
	for _, j := range read {
		listed[j.ID] = true
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	for id, h := range f.hooked {
		switch {
		case listed[h.job.ID]:
		case h.at.Before(readAt):
			delete(f.hooked, id)
		default:
			read = append(read, h.job)
		}
	}
	return read
}
