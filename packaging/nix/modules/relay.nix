# services.connet-relay: see mk-module.nix and docs/deploy.md.
import ./mk-module.nix {
  command = "relay";
  description = "connet relay server";
  stateful = true;
}
