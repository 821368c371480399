package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"github.com/nixos-fireactions/nixos-fireactions/config"
	"github.com/nixos-fireactions/nixos-fireactions/daemon"
	"github.com/nixos-fireactions/nixos-fireactions/imagestore"
)

// envConfig names the configuration file the image commands read.
const envConfig = "FIREACTIONS_CONFIG"

// imageCmd is `fireactions image pull|ls|rm|prune`: the host's image store,
// used directly (not through the API), so images can be pulled before the
// orchestrator starts and pools with pull_policy Never find them.
func imageCmd() *cobra.Command {
	var configPath, output string
	cmd := &cobra.Command{
		Use:   "image",
		Short: "Pull, list and remove the OCI images pools boot from",
		Args:  cobra.NoArgs,
	}
	cmd.PersistentFlags().StringVarP(&configPath, "config", "c", os.Getenv(envConfig),
		"configuration file naming the store, its mirrors and credentials (env "+envConfig+")")
	open := func(cmd *cobra.Command) (*imagestore.Store, *config.Config, error) {
		if configPath == "" {
			return nil, nil, fmt.Errorf("no configuration: pass --config FILE or set %s", envConfig)
		}
		cfg, err := config.Load(configPath)
		if err != nil {
			return nil, nil, err
		}
		log := slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), &slog.HandlerOptions{Level: slog.LevelWarn}))
		s, err := daemon.OpenImageStore(cfg, log)
		return s, cfg, err
	}

	var policy string
	pull := &cobra.Command{
		Use:   "pull REFERENCE...",
		Short: "Pull images into the store and flatten them",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			p, err := imagestore.ParsePullPolicy(policy)
			if err != nil {
				return err
			}
			s, _, err := open(cmd)
			if err != nil {
				return err
			}
			for _, ref := range args {
				start := time.Now()
				line := newProgressLine(cmd.ErrOrStderr(), ref)
				im, err := s.Pull(cmd.Context(), ref, p, line.update)
				line.end()
				if err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "%s: %s (%s, %s, %d layers, %d files) in %s\n", ref, im.Digest, im.FSType,
					humanBytes(im.Bytes), im.Layers, im.Files, time.Since(start).Round(time.Millisecond))
			}
			return nil
		},
	}
	pull.Flags().StringVar(&policy, "policy", string(imagestore.PullAlways), "pull policy: Always (ask the registry), IfNotPresent or Never")

	ls := &cobra.Command{
		Use:     "ls",
		Aliases: []string{"list"},
		Short:   "List the images in the store, most recently used first",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			s, _, err := open(cmd)
			if err != nil {
				return err
			}
			list, err := s.List()
			if err != nil {
				return err
			}
			if output == "json" {
				return writeImagesJSON(cmd.OutOrStdout(), list)
			}
			return printImages(cmd.OutOrStdout(), list)
		},
	}
	ls.Flags().StringVarP(&output, "output", "o", "text", "text or json")

	rm := &cobra.Command{
		Use:   "rm REFERENCE|DIGEST...",
		Short: "Remove images no VM or pool uses",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			s, _, err := open(cmd)
			if err != nil {
				return err
			}
			for _, a := range args {
				im, err := s.Remove(a)
				if err != nil {
					return fmt.Errorf("%s: %w", a, err)
				}
				fmt.Fprintf(cmd.OutOrStdout(), "removed %s (%s)\n", im.Digest, humanBytes(im.Bytes))
			}
			return nil
		},
	}

	var all bool
	prune := &cobra.Command{
		Use:   "prune",
		Short: "Evict least recently used images no VM or pool uses down to images.max_bytes (--all: every one)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			s, cfg, err := open(cmd)
			if err != nil {
				return err
			}
			limit := cfg.Images.MaxBytes
			if all {
				limit = 0
			} else if limit == 0 {
				return fmt.Errorf("images.max_bytes is 0 (no cap): use --all to remove every unused image")
			}
			evicted, err := s.Prune(limit, "")
			for _, im := range evicted {
				fmt.Fprintf(cmd.OutOrStdout(), "removed %s %s (%s)\n", im.Ref, im.Digest, humanBytes(im.Bytes))
			}
			return err
		},
	}
	prune.Flags().BoolVar(&all, "all", false, "remove every image no VM or pool uses")

	cmd.AddCommand(pull, ls, rm, prune)
	return cmd
}

func printImages(w io.Writer, list []imagestore.Entry) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "REFERENCE\tDIGEST\tFS\tSIZE\tLAST USED\tIN USE")
	for _, e := range list {
		refs := strings.Join(e.Refs, ",")
		if refs == "" {
			refs = e.Ref
		}
		used := "-"
		if !e.LastUsed.IsZero() {
			used = time.Since(e.LastUsed).Round(time.Second).String() + " ago"
		}
		inUse := "no"
		if e.InUse {
			inUse = "yes"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", refs, shortDigest(e.Digest), e.FSType, humanBytes(e.Bytes), used, inUse)
	}
	return tw.Flush()
}

func writeImagesJSON(w io.Writer, list []imagestore.Entry) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	type row struct {
		*imagestore.Image
		Refs     []string  `json:"refs"`
		LastUsed time.Time `json:"last_used"`
		InUse    bool      `json:"in_use"`
	}
	rows := make([]row, 0, len(list))
	for _, e := range list {
		rows = append(rows, row{e.Image, e.Refs, e.LastUsed, e.InUse})
	}
	return enc.Encode(rows)
}

func shortDigest(d string) string {
	_, hex, _ := strings.Cut(d, ":")
	if len(hex) > 12 {
		hex = hex[:12]
	}
	return hex
}

func humanBytes(n int64) string {
	const unit = 1000
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %cB", float64(n)/float64(div), "kMGTPE"[exp])
}

// progressLine shows a long pull's progress: rewritten in place on a
// terminal, else a line every few seconds.
type progressLine struct {
	w     io.Writer
	ref   string
	tty   bool
	mu    sync.Mutex
	last  time.Time
	shown bool
}

func newProgressLine(w io.Writer, ref string) *progressLine {
	p := &progressLine{w: w, ref: ref}
	if f, ok := w.(*os.File); ok {
		_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
		p.tty = err == nil
	}
	return p
}

func (p *progressLine) update(pr imagestore.Progress) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.tty && time.Since(p.last) < 3*time.Second {
		return
	}
	p.last = time.Now()
	text := fmt.Sprintf("%s: %s", p.ref, pr.Phase)
	if pr.Phase == "pulling" && pr.Total > 0 {
		text += fmt.Sprintf(" %s of %s (%d%%)", humanBytes(pr.Bytes), humanBytes(pr.Total), min(100, pr.Bytes*100/pr.Total))
	}
	if p.tty {
		fmt.Fprintf(p.w, "\r\033[K%s", text)
	} else {
		fmt.Fprintln(p.w, text)
	}
	p.shown = true
}

// end clears a terminal's progress line.
func (p *progressLine) end() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.tty && p.shown {
		fmt.Fprint(p.w, "\r\033[K")
	}
}
