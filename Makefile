# The two commands: `make demo` and `make test`. Both install what they
# need (Debian packages, Go modules, Gitea built into $(CACHE)).

GO      ?= go
CACHE   ?= $(HOME)/.cache/fireactions
VERSION ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X github.com/nixos-fireactions/nixos-fireactions/cli.Version=$(VERSION)

export FIREACTIONS_CACHE := $(CACHE)

.PHONY: all build deps peers unit nix-check e2e test dockerfile-test demo lint clean

all: build

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/fireactions ./cmd/fireactions
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/fireactions-agent ./cmd/fireactions-agent

deps:
	scripts/install-deps.sh

peers: deps
	scripts/build-peers.sh $(CACHE)

unit:
	$(GO) vet ./...
	$(GO) vet -tags e2e ./e2e
	$(GO) vet -tags 'e2e buildah' ./e2e
	$(GO) test -count=1 ./...

lint: deps
	shellcheck scripts/*.sh .ci/run deploy/*.sh images/*/*.sh

# The NixOS layer: every module, scenario, profile and fleet host through
# nixpkgs' lib.evalModules (lib from $NIXPKGS_LIB, ../shared/nixpkgs-lib/lib
# or <nixpkgs/lib>: nix/eval/lib.nix), each rendered unit asserted and its
# configuration validated; the vendorHash recomputed, no placeholder hash;
# the guest kernel fragment through Linux's olddefconfig; docs/nixos.md
# kept current; deploy/deploy.sh run against stub nix and ssh.
nix-check: deps
	$(GO) vet -tags nixcheck ./nix/nixcheck
	$(GO) test -tags nixcheck -count=1 ./nix/nixcheck

e2e: peers
	$(GO) test -tags e2e -count=1 -v -timeout 75m ./e2e

test: deps peers lint unit nix-check e2e

# images/docker/Dockerfile.gitea built with buildah (minutes; outside the
# e2e suite's budget): e2e/dockerfile_test.go.
dockerfile-test: peers
	$(GO) test -tags 'e2e buildah' -count=1 -v -timeout 40m -run 'TestGiteaDockerfileBuildsWithBuildah$$' ./e2e

demo: peers build
	scripts/demo.sh

clean:
	rm -rf bin
