# connet as a Nix package: `nix build` at the top level (flake.nix), or
#   callPackage ./packaging/nix/package.nix { }
# The version is pyproject.toml's, read here so that the two never disagree.
{ lib, python3Packages }:

let
  pyproject = builtins.fromTOML (builtins.readFile ../../pyproject.toml);
in
python3Packages.buildPythonApplication {
  pname = "connet";
  inherit (pyproject.project) version;
  pyproject = true;

  # the Python sources only: a change to the docs or the tests does not rebuild the package
  src = lib.fileset.toSource {
    root = ../..;
    fileset = lib.fileset.unions [
      ../../pyproject.toml
      ../../README.md
      ../../connet_core
      ../../plugins
      ../../tui
    ];
  };

  build-system = [ python3Packages.setuptools ];

  dependencies = with python3Packages; [
    qh3
    aioquic
    cryptography
    pluggy
    dynaconf
    msgpack
    click
    ifaddr
    async-upnp-client
    certifi
    uvloop
  ];

  optional-dependencies.tui = [ python3Packages.textual ];

  # the test suite starts real processes on loopback and network namespaces: it runs in the
  # project's CI, not in the sandbox
  doCheck = false;
  pythonImportsCheck = [ "connet_core" "connet_quic" "connet_filestore" ];

  meta = {
    description = pyproject.project.description;
    license = lib.licenses.asl20;
    mainProgram = "connet";
    platforms = lib.platforms.unix;
  };
}
