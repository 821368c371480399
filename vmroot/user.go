package vmroot

import (
	"bufio"
	"fmt"
	"strconv"
	"strings"

	"github.com/nixos-fireactions/nixos-fireactions/config"
	"github.com/nixos-fireactions/nixos-fireactions/imagestore"
)

// runnerUser is who the runner runs as inside an image.
type runnerUser struct {
	name     string
	uid, gid int
}

// resolveUser picks the runner's user in an image: the image's USER when
// it names someone other than root, else the pool's runner.user. Either is
// looked up in the image's /etc/passwd, so that its uid and gid are the
// image's and the files the image gives that user stay theirs (the
// actions-runner image's "runner" is 1001). A pool user the image lacks
// keeps the pool's uid and gid; the agent adds it. The runner never runs
// as root.
func resolveUser(im *imagestore.Image, opt config.RunnerOptions) (runnerUser, error) {
	users := parseDB(im.Passwd)
	spec := strings.TrimSpace(im.Config.User)
	userPart, groupPart, _ := strings.Cut(spec, ":")
	var u runnerUser
	switch {
	case userPart == "" || userPart == "root" || userPart == "0":
		u = runnerUser{name: opt.User, uid: opt.UID, gid: opt.GID}
		if e, ok := users.byName(opt.User); ok {
			u.uid, u.gid = e.id, e.gid
		}
	case isNumber(userPart):
		uid, _ := strconv.Atoi(userPart)
		u = runnerUser{name: opt.User, uid: uid, gid: uid}
		if e, ok := users.byID(uid); ok {
			u.name, u.gid = e.name, e.gid
		}
	default:
		e, ok := users.byName(userPart)
		if !ok {
			return u, fmt.Errorf("the image's user %q is not in its /etc/passwd", userPart)
		}
		u = runnerUser{name: e.name, uid: e.id, gid: e.gid}
	}
	switch {
	case groupPart == "":
	case isNumber(groupPart):
		u.gid, _ = strconv.Atoi(groupPart)
	default:
		e, ok := parseDB(im.Group).byName(groupPart)
		if !ok {
			return u, fmt.Errorf("the image's group %q is not in its /etc/group", groupPart)
		}
		u.gid = e.id
	}
	if u.uid == 0 || u.gid == 0 {
		return u, fmt.Errorf("the runner would run as root (user %q of the image, %d:%d): runners are unprivileged", spec, u.uid, u.gid)
	}
	return u, nil
}

func isNumber(s string) bool {
	_, err := strconv.Atoi(s)
	return err == nil && !strings.HasPrefix(s, "-")
}

// dbEntry is a line of /etc/passwd or /etc/group: name, id and (passwd)
// primary group.
type dbEntry struct {
	name    string
	id, gid int
}

type userDB []dbEntry

// parseDB reads passwd- or group-format lines, skipping malformed ones.
func parseDB(content string) userDB {
	var db userDB
	s := bufio.NewScanner(strings.NewReader(content))
	for s.Scan() {
		f := strings.Split(s.Text(), ":")
		if len(f) < 3 || f[0] == "" {
			continue
		}
		id, err := strconv.Atoi(f[2])
		if err != nil {
			continue
		}
		e := dbEntry{name: f[0], id: id}
		if len(f) > 3 {
			e.gid, _ = strconv.Atoi(f[3])
		}
		db = append(db, e)
	}
	return db
}

func (db userDB) byName(n string) (dbEntry, bool) {
	for _, e := range db {
		if e.name == n {
			return e, true
		}
	}
	return dbEntry{}, false
}

func (db userDB) byID(id int) (dbEntry, bool) {
	for _, e := range db {
		if e.id == id {
			return e, true
		}
	}
	return dbEntry{}, false
}
