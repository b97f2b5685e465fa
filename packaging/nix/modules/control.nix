# services.connet-control: see mk-module.nix and docs/deploy.md.
import ./mk-module.nix {
  command = "control";
  description = "connet control server";
  stateful = true;
}
