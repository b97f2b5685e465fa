# Without flakes: import ./packaging/nix { inherit pkgs; }
{ pkgs ? import <nixpkgs> { } }:
{
  package = pkgs.callPackage ./package.nix { };
  nixosModules = {
    client = ./modules/client.nix;
    server = ./modules/server.nix;
    control = ./modules/control.nix;
    relay = ./modules/relay.nix;
  };
}
