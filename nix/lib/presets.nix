# Pool presets: a size (sizes.nix) times a forge type. mkPool renders one
# pool of the binary's configuration (docs/config.md, pools[]) from the
# module's typed pool options; example renders a whole configuration with
# placeholder forge data, which `make nix-check` feeds to
# `fireactions validate --offline` for every size and forge.
{ faces, sizes, util }:
let
  inherit (util) filterNulls recursiveMerge optionalAttrs;

  # What differs between forge types. scope null: the pool must set one
  # (github has no instance scope).
  forgeTypes = {
    github = {
      scope = null;
      labels = [ "self-hosted" "linux" "x64" ];
      runner = { uid = 1001; }; # the actions-runner image's runner user
      timeouts = { boot = "2m"; idle = "10m"; job = "6h"; }; # GitHub's own job limit
      rootInitramfs = "actions-runner-root.cpio.gz";
    };
    gitea = {
      scope = "instance";
      labels = [ "linux" "x86_64-linux" ];
      runner = { uid = 1000; };
      timeouts = { boot = "2m"; idle = "10m"; job = "3h"; };
      rootInitramfs = "act-runner-root.cpio.gz";
    };
    gitlab = {
      scope = "instance";
      labels = [ "linux" "x86_64-linux" ];
      runner = { uid = 1000; executor = "shell"; };
      timeouts = { boot = "2m"; idle = "10m"; job = "3h"; };
      rootInitramfs = "gitlab-runner-root.cpio.gz";
    };
  };

  sizeOf = size: sizes.${size} or (throw "unknown pool size ${builtins.toJSON size} (want one of ${toString (builtins.attrNames sizes)})");
  forgeOf = type: forgeTypes.${type} or (throw "unknown forge type ${builtins.toJSON type} (want one of ${toString (builtins.attrNames forgeTypes)})");
in
rec {
  inherit forgeTypes;

  # defaultLabels: the forge's usual labels plus one naming the face and
  # size (fireactions-large), so workflows can ask for a size.
  defaultLabels = { face, forgeType, size }: (forgeOf forgeType).labels ++ [ "${face}-${size}" ];

  # defaultRootInitramfs: where the guest root of a forge type is expected
  # when the pool names none (the operator or a deploy step puts it there).
  defaultRootInitramfs = { face, forgeType }: "${faces.${face}.stateDir}/boot/${(forgeOf forgeType).rootInitramfs}";

  # mkPool: one entry of pools[]. Arguments are the module's pool options;
  # null means "the preset's".
  mkPool =
    { face
    , name
    , forge
    , forgeType
    , size ? "medium"
    , scope ? null
    , labels ? null
    , repos ? [ ]
    , installationId ? null
    , minIdle ? null
    , max ? null
    , kernel
    , kernelModules ? [ ]
    , modulesDir ? null
    , rootInitramfs ? null
    , warmStart ? false
    , guestRoot ? null # the forge's guest root the host builds: { archive; runnerPath; }
    , settings ? { }
    , sizes' ? sizes # a test may pass a broken size table
    }:
    let
      s = sizes'.${size} or (sizeOf size);
      ft = forgeOf forgeType;
      scope' = if scope != null then scope else ft.scope;
      useGuestRoot = !((settings.vm or { }) ? image) && rootInitramfs == null;
    in
    recursiveMerge
      (filterNulls {
        inherit name forge;
        scope = scope';
        installation_id = installationId;
        labels = if labels != null then labels else defaultLabels { inherit face forgeType size; };
        min_idle = if minIdle != null then minIdle else s.min_idle;
        max = if max != null then max else s.max;
        warm_start = if warmStart then true else null;
        vm = filterNulls {
          inherit (s) vcpus memory_mib;
          inherit kernel;
          kernel_modules = if kernelModules == [ ] then null else kernelModules;
          modules_dir = modulesDir;
          # An OCI image (settings.vm.image) is the root instead.
          root_initramfs =
            if (settings.vm or { }) ? image then null
            else if rootInitramfs != null then rootInitramfs
            else if guestRoot != null then guestRoot.archive
            else defaultRootInitramfs { inherit face forgeType; };
        };
        # The runner where the host's guest root puts it.
        runner = ft.runner // optionalAttrs (useGuestRoot && guestRoot != null) { path = guestRoot.runnerPath; };
        timeouts = ft.timeouts;
      } // optionalAttrs (repos != [ ]) { inherit repos; })
      settings;

  # Placeholder forge connections for checks and examples (example.invalid
  # never resolves).
  exampleForges = {
    github = { type = "github"; appId = 1; appPrivateKeyFile = "/run/secrets/github-app-key"; webhookSecretFile = "/run/secrets/github-webhook-secret"; };
    gitea = { type = "gitea"; url = "https://gitea.example.invalid"; tokenFile = "/run/secrets/gitea-token"; };
    gitlab = { type = "gitlab"; url = "https://gitlab.example.invalid"; tokenFile = "/run/secrets/gitlab-token"; };
  };
  exampleScopes = { github = "org:example"; gitea = "instance"; gitlab = "group:example"; };
}
