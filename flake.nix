{
  description = "connet: a peer-to-peer reverse proxy for NAT traversal over QUIC";

  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";

  outputs = { self, nixpkgs }:
    let
      systems = [ "x86_64-linux" "aarch64-linux" "x86_64-darwin" "aarch64-darwin" ];
      forAllSystems = f: nixpkgs.lib.genAttrs systems (system: f nixpkgs.legacyPackages.${system});
    in
    {
      packages = forAllSystems (pkgs: rec {
        connet = pkgs.callPackage ./packaging/nix/package.nix { };
        default = connet;
      });

      nixosModules = {
        client = ./packaging/nix/modules/client.nix;
        server = ./packaging/nix/modules/server.nix;
        control = ./packaging/nix/modules/control.nix;
        relay = ./packaging/nix/modules/relay.nix;
        default = { imports = [ ./packaging/nix/modules/client.nix ./packaging/nix/modules/server.nix
                                ./packaging/nix/modules/control.nix ./packaging/nix/modules/relay.nix ]; };
      };

      overlays.default = final: prev: {
        connet = final.callPackage ./packaging/nix/package.nix { };
      };
    };
}
