# services.connet-client: see mk-module.nix and docs/deploy.md.
import ./mk-module.nix {
  command = "client";
  description = "connet client: exposes destinations and serves sources";
  stateful = false;
}
