package config

// Flavors of a gitea forge (forge.flavor): which server it is.
const (
	FlavorGitea   = "gitea"
	FlavorForgejo = "forgejo"
	FlavorAuto    = "auto"
)

// Defaults of gitea forges.
const (
	defaultGiteaFlavor = FlavorAuto
	// defaultForgejoRunnerPath is runner.path for pools of a forge set to
	// flavor forgejo: Forgejo's runner, whose one-job mode the guest runs.
	defaultForgejoRunnerPath = "/bin/forgejo-runner"
)

// deriveGitea fills a gitea forge's flavor where the file leaves it out.
func deriveGitea(c *Config) {
	for i := range c.Forges {
		if f := &c.Forges[i]; f.Type == "gitea" && f.Flavor == "" {
			f.Flavor = defaultGiteaFlavor
		}
	}
}

// flavor checks flavor: gitea only, one of its three words.
func (v *validator) flavor(ff field, fo *Forge) {
	err := onlyFor(fo.Flavor != "", "gitea", fo.Type, "forges")
	if err == nil && fo.Type == "gitea" {
		err = oneOf(fo.Flavor, FlavorGitea, FlavorForgejo, FlavorAuto)
	}
	v.check(rule{ff.child("flavor"), err})
}
