# The orchestrator unit's sandbox: root with a bounding set of exactly the
# capabilities its work needs, the tools it runs on PATH, and systemd's
# filters relaxed only where that work needs it. Data, so the module, the
# checks and the end-to-end test that runs the binary under this very
# bounding set (e2e TestUnitSandboxRunsAJob) read one source.
let
  # Why each capability is there.
  why = {
    # The bridge, TAPs, nftables tables and net.ipv4.ip_forward.
    CAP_NET_ADMIN = "network";
    # Flattening an OCI image keeps its files' owners, modes, set-id bits,
    # device nodes and file capabilities, in directories owned by others.
    CAP_CHOWN = "image";
    CAP_FOWNER = "image";
    CAP_FSETID = "image";
    CAP_DAC_OVERRIDE = "image";
    CAP_MKNOD = "image";
    CAP_SETFCAP = "image";
    # The jailer: a mount namespace and pivot_root into a chroot with its
    # own device nodes, cgroup files, then the VM's own uid/gid; the
    # driver signals the jailed VMMs (another uid) and sets their limits.
    CAP_SYS_ADMIN = "jailer";
    CAP_SYS_CHROOT = "jailer";
    CAP_SETUID = "jailer";
    CAP_SETGID = "jailer";
    CAP_KILL = "jailer";
    CAP_SYS_RESOURCE = "jailer";
  };
  needed = uses: builtins.filter (c: builtins.elem why.${c} uses) (builtins.attrNames why);
  unique = l: builtins.foldl' (acc: x: if builtins.elem x acc then acc else acc ++ [ x ]) [ ] l;
in
{
  inherit why;

  # unit: the sandbox of a face's unit.
  #   imagePools   some pool's root is an OCI image (vm.image)
  #   firecracker  vmm.driver is firecracker (the jailer runs)
  unit = { imagePools, firecracker }:
    let
      uses = [ "network" ]
        ++ (if imagePools || firecracker then [ "image" ] else [ ])
        ++ (if firecracker then [ "jailer" ] else [ ]);
    in
    {
      capabilities = unique (needed uses);
      # nixpkgs attributes put on the unit's PATH: nft and ip (network),
      # mkfs.erofs and mkfs.ext4 (image roots and the VMs' writable disks).
      path = [ "nftables" "iproute2" "erofs-utils" "e2fsprogs" ];

      serviceConfig = {
        ProtectSystem = "strict";
        ProtectHome = true;
        PrivateTmp = true;
        ProtectKernelModules = true; # microvm-base loads kvm, tun, bridge at boot
        ProtectKernelLogs = true;
        ProtectClock = true;
        ProtectHostname = true;
        ProtectProc = "invisible";
        RestrictRealtime = true;
        LockPersonality = true;
        SystemCallArchitectures = "native";
        RestrictAddressFamilies = [ "AF_UNIX" "AF_INET" "AF_INET6" "AF_NETLINK" ];
        SystemCallErrorNumber = "EPERM";

        # Relaxed: serve writes net.ipv4.ip_forward when nat is on.
        ProtectKernelTunables = false;
        # Relaxed: the VMM needs /dev/kvm, /dev/net/tun and vhost-net, so
        # no PrivateDevices; only these devices are allowed instead.
        PrivateDevices = false;
        DevicePolicy = "closed";
        DeviceAllow = [ "/dev/kvm rw" "/dev/net/tun rw" "/dev/vhost-net rw" ];
        # Relaxed: QEMU runs as a child under this unit's filters, and its
        # TCG fallback (accel auto without working KVM) generates code.
        MemoryDenyWriteExecute = false;
        # Relaxed: QEMU pins and prioritises its threads (@resources);
        # image roots make device nodes (mknod); the jailer mounts,
        # pivots and chroots.
        SystemCallFilter = [ "@system-service" "@resources" ]
          ++ (if imagePools || firecracker then [ "mknod" "mknodat" ] else [ ])
          ++ (if firecracker then [ "@mount" "chroot" "pivot_root" ] else [ ]);
        # Relaxed with image roots: images carry set-id programs (sudo),
        # which flattening must keep.
        RestrictSUIDSGID = !(imagePools || firecracker);
        # Relaxed with Firecracker: the jailer makes a mount namespace and
        # writes the VMs' cgroups, in the subtree delegated to this unit.
        RestrictNamespaces = if firecracker then [ "mnt" ] else true;
        ProtectControlGroups = !firecracker;
      } // (if firecracker then { Delegate = true; } else { });
    };
}
