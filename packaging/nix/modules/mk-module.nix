# The NixOS module of one connet command, services.connet-<command>: the options come from
# keys.nix (one per documented configuration key), the unit from hardening.nix.
#
#   settings          the configuration file, as Nix: root keys and the [<section>] table;
#                     freeform, so every key of docs/configuration.md can be set
#   environmentFile   CONNET_* variables kept out of the Nix store (tokens, for instance)
#
# Files that hold secrets (token-file, key-file, *tokens-file) are absolute paths outside the
# store, handed to the service with LoadCredential=: they may stay readable by root only.
{ command, description, stateful }:

{ config, lib, pkgs, ... }:

let
  section = command;
  unit = "connet-${command}";
  cfg = config.services.${unit};
  keys = import ./keys.nix;
  toml = pkgs.formats.toml { };

  keyTypes = {
    str = lib.types.str;
    path = lib.types.path;
    secretPath = lib.types.strMatching "/.*";
    listOfStr = lib.types.listOf lib.types.str;
  };
  keyOption = name: key: lib.mkOption {
    type = lib.types.nullOr keyTypes.${key.type};
    inherit (key) default description;
  };
  table = options: lib.types.submodule {
    freeformType = toml.type;
    options = lib.mapAttrs keyOption options;
  };

  secretKeys = lib.attrNames (lib.filterAttrs (_: key: key.type == "secretPath") keys.${section});
  sectionSettings = cfg.settings.${section};
  givenSecrets = lib.filter (name: sectionSettings.${name} != null) secretKeys;
  credential = name: "/run/credentials/${unit}.service/${name}";

  configFile = toml.generate "${unit}.toml" (lib.filterAttrsRecursive (_: value: value != null) (
    cfg.settings // { ${section} = sectionSettings // lib.genAttrs givenSecrets credential; }
  ));

  # the UDP ports of the configured addresses, for openFirewall (port 0 opens nothing)
  portOf = addr: lib.toInt (lib.last (lib.splitString ":" addr));
  udpPorts = lib.filter (port: port != 0)
    (map (name: portOf sectionSettings.${name}) keys.udpAddrs.${section});
  # the TLS-over-TCP addresses are off unless set
  tcpPorts = lib.filter (port: port != 0)
    (map (name: portOf sectionSettings.${name})
      (lib.filter (name: (sectionSettings.${name} or null) != null) keys.tcpAddrs.${section}));

  subcommand = lib.optionalString (command != "client") "${command} ";
in
{
  options.services.${unit} = {
    enable = lib.mkEnableOption description;

    package = lib.mkOption {
      type = lib.types.package;
      default = pkgs.callPackage ../package.nix { };
      defaultText = lib.literalExpression "pkgs.callPackage ./packaging/nix/package.nix { }";
      description = "The connet package.";
    };

    settings = lib.mkOption {
      type = lib.types.submodule {
        freeformType = toml.type;
        options = lib.mapAttrs keyOption keys.common // {
          ${section} = lib.mkOption {
            type = table keys.${section};
            default = { };
            description = "The [${section}] table (docs/configuration.md).";
          };
        };
      };
      default = { };
      description = "The configuration file of ${unit}, as Nix (docs/configuration.md).";
    };

    environmentFile = lib.mkOption {
      type = lib.types.nullOr lib.types.str;
      default = null;
      example = "/run/secrets/${unit}.env";
      description = "A file of CONNET_* variables (CONNET_CLIENT__TOKEN=...), read by systemd, not copied to the store.";
    };

    openFirewall = lib.mkOption {
      type = lib.types.bool;
      default = false;
      description = "Open the ports of the configured addresses in the firewall (UDP, and TCP for the TLS-over-TCP ones).";
    };
  };

  config = lib.mkIf cfg.enable {
    services.${unit}.settings.${section} = lib.mkIf stateful {
      store-dir = lib.mkDefault "/var/lib/${unit}";
    };

    networking.firewall.allowedUDPPorts = lib.mkIf cfg.openFirewall udpPorts;
    networking.firewall.allowedTCPPorts = lib.mkIf cfg.openFirewall tcpPorts;

    systemd.services.${unit} = {
      inherit description;
      wantedBy = [ "multi-user.target" ];
      wants = [ "network-online.target" ];
      after = [ "network-online.target" ];
      serviceConfig = import ./hardening.nix // {
        Type = "exec";
        ExecStart = "${lib.getExe cfg.package} ${subcommand}--config ${configFile}";
        LoadCredential = map (name: "${name}:${sectionSettings.${name}}") givenSecrets;
        EnvironmentFile = lib.optional (cfg.environmentFile != null) cfg.environmentFile;
      } // lib.optionalAttrs stateful {
        StateDirectory = unit;
        StateDirectoryMode = "0700";
      };
    };
  };
}
