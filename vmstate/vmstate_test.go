package vmstate

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestStoreRoundTripAndLeftovers(t *testing.T) {
	s, err := Open(filepath.Join(t.TempDir(), "vms"))
	if err != nil {
		t.Fatal(err)
	}
	r := &Record{ID: "a1", Pool: "p", Phase: Booting, PID: 42, TAP: "faa1", Address: "10.0.0.2", RunnerID: "7"}
	if err := s.Create(r); err != nil {
		t.Fatal(err)
	}
	if err := s.Create(r); err == nil {
		t.Fatal("creating an existing VM directory twice succeeded")
	}
	r.Phase = Idle
	if err := s.Save(r); err != nil {
		t.Fatal(err)
	}
	// A directory without a record is not the store's (Create logs a
	// VM's record before it makes the directory): not listed.
	if err := os.Mkdir(s.Dir("b2"), 0o700); err != nil {
		t.Fatal(err)
	}
	list, err := s.List()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]*Record{}
	for _, x := range list {
		got[x.ID] = x
	}
	if a := got["a1"]; a == nil || a.Phase != Idle || a.PID != 42 || a.RunnerID != "7" {
		t.Fatalf("a1 = %+v", a)
	}
	if got["b2"] != nil {
		t.Fatal("a directory without a record listed")
	}
	if err := s.Remove("a1"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(s.Dir("a1")); !os.IsNotExist(err) {
		t.Fatal("directory left after Remove")
	}
}

func TestPhaseTerminal(t *testing.T) {
	for p, want := range map[Phase]bool{Creating: false, Booting: false, Idle: false, Busy: false, Done: true, Failed: true} {
		if p.Terminal() != want {
			t.Errorf("%s.Terminal() = %v", p, !want)
		}
	}
}

// The image a VM boots survives a save and a list (an adopting restart
// reads it back to lease the image again); an initramfs VM's record has
// no image key at all.
func TestRecordImageRoundTrips(t *testing.T) {
	tests := []struct {
		name, image string
	}{
		{"image root", "sha256:4f1c2b9e0d7a"},
		{"initramfs root", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := Open(t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			if err := s.Create(&Record{ID: "v1", Pool: "p", Phase: Idle, Image: tt.image}); err != nil {
				t.Fatal(err)
			}
			list, err := s.List()
			if err != nil || len(list) != 1 {
				t.Fatalf("list: %v, %v", list, err)
			}
			if list[0].Image != tt.image {
				t.Errorf("image %q after a round trip, want %q", list[0].Image, tt.image)
			}
			b, err := os.ReadFile(s.j.f.Name())
			if err != nil {
				t.Fatal(err)
			}
			if has := strings.Contains(string(b), `"image"`); has != (tt.image != "") {
				t.Errorf("the log has an image key: %v, want %v:\n%s", has, tt.image != "", b)
			}
		})
	}
}
