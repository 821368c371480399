package vmstate

import "os"

// commit is one record write to make durable: its file is written but
// not yet synced.
type commit struct {
	file *os.File // the record, written, not yet synced or closed
	// newDir, for a Create: the VM's directory under its temporary name,
	// holding file; synced (the record's name in it) before the rename.
	newDir string
	// from, to: the rename that puts the record (Save) or the VM's
	// directory (Create) in place; dir holds to.
	from, to, dir string
}

// do makes c durable: the file synced, for a Create its directory
// synced, the rename, and the directory of the new name synced. On
// failure the temporary file or directory is removed.
//
// Each writer syncs for itself, at once: ext4's journal commits the
// syncs that wait together in one transaction. A group commit in the
// store (writes gathered, one directory sync for many Creates) was
// measured and not kept: see docs/performance.md.
func (c *commit) do() error {
	err := syncFile(c.file)
	if cerr := c.file.Close(); err == nil {
		err = cerr
	}
	if err == nil && c.newDir != "" {
		err = syncDir(c.newDir)
	}
	if err == nil {
		err = os.Rename(c.from, c.to)
	}
	if err != nil {
		if c.newDir != "" {
			os.RemoveAll(c.newDir)
		} else {
			os.Remove(c.from)
		}
		return err
	}
	return syncDir(c.dir)
}
