# A face: the fireactions program under another name (fireteact,
# fireglab). A symlink: the binary reads its name (argv[0]) to pick the
# API socket its client commands use; the agent stays beside the real
# binary, where serve looks for it.
{ runCommand, fireactions, face }:
runCommand "${face}-${fireactions.version}"
  {
    inherit (fireactions) version;
    meta = fireactions.meta // { mainProgram = face; };
  } ''
  mkdir -p $out/bin
  ln -s ${fireactions}/bin/fireactions $out/bin/${face}
  ln -s ${fireactions}/bin/fireactions-agent $out/bin/fireactions-agent
''
