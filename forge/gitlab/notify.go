package gitlab

import (
	"strconv"

	"github.com/nixos-fireactions/nixos-fireactions/forge"
)

var _ forge.QueueNotifier = (*Forge)(nil)

// NotifyQueue implements forge.QueueNotifier: the scope tells each job
// that joins its queue (a poll lists it, or a Job Hook announces it and
// its lookup says it is pending) or leaves it (a poll no longer lists it,
// a Job Hook says it left pending, or a runner of the scope took it), as
// it learns it. A change told kicks nothing.
func (f *Forge) NotifyQueue(notify func(forge.QueueChange)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.notify = notify
	f.told = map[string]bool{}
}

// tellPollLocked tells the difference between what the scope told and
// what a poll (with the webhooks' jobs) says is queued. Callers hold f.mu;
// the returned changes go to notify after it is released.
func (f *Forge) tellPollLocked(jobs []forge.Job) []forge.QueueChange {
	if f.notify == nil {
		return nil
	}
	var out []forge.QueueChange
	now := make(map[string]bool, len(jobs))
	for _, j := range jobs {
		now[j.ID] = true
		if !f.told[j.ID] {
			f.told[j.ID] = true
			out = append(out, forge.QueueChange{Job: j, Queued: true})
		}
	}
	for id := range f.told {
		if !now[id] {
			delete(f.told, id)
			out = append(out, forge.QueueChange{Job: forge.Job{ID: id}})
		}
	}
	return out
}

// tellLocked records one change and returns it to tell, or nothing when
// no one listens or it was told already. Callers hold f.mu.
func (f *Forge) tellLocked(j forge.Job, queued bool) []forge.QueueChange {
	if f.notify == nil || f.told[j.ID] == queued {
		return nil
	}
	if queued {
		f.told[j.ID] = true
	} else {
		delete(f.told, j.ID)
	}
	return []forge.QueueChange{{Job: j, Queued: queued}}
}

// tell hands changes to the listener, in order. notify does not block
// and does not call the driver (forge.QueueNotifier). The listener is
// read under f.mu, as NotifyQueue sets it.
func (f *Forge) tell(changes []forge.QueueChange) {
	if len(changes) == 0 {
		return
	}
	f.mu.Lock()
	notify := f.notify
	f.mu.Unlock()
	if notify == nil {
		return
	}
	for _, c := range changes {
		notify(c)
	}
}

// tookJobs tells that the jobs a runner of the scope took left the queue.
func (f *Forge) tookJobs(js []runnerJob) {
	var out []forge.QueueChange
	f.mu.Lock()
	for _, j := range js {
		out = append(out, f.tellLocked(forge.Job{ID: strconv.FormatInt(j.id, 10)}, false)...)
	}
	f.mu.Unlock()
	f.tell(out)
}
