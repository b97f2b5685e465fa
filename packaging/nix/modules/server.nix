# services.connet-server: see mk-module.nix and docs/deploy.md.
import ./mk-module.nix {
  command = "server";
  description = "connet server (control and relay in one process)";
  stateful = true;
}
