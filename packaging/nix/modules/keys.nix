# The configuration keys the NixOS modules declare as options, per section, with their
# type, default and description (docs/configuration.md has every key). Plain data with no
# nixpkgs in it, so the tests evaluate it on a machine without nixpkgs; mk-module.nix turns
# each entry into an option under services.connet-<command>.settings.<section>.
# Keys left out (restriction tables, disable-plugins) can still be set: settings is freeform.
let
  key = type: default: description: { inherit type default description; };
  str = "str";
  path = "path";
  # a file with a secret: an absolute path string (a Nix path would be copied into the
  # world-readable store), handed to the service with LoadCredential=
  secret = "secretPath";
  strs = "listOfStr";
in
{
  # root keys, shared by every command
  common = {
    log-level = key str "info" "debug, info, warn or error.";
    log-format = key str "text" "text or json.";
    transport = key str "auto" "The QUIC transport: auto, qh3, aioquic, or one a plugin adds.";
  };

  client = {
    token-file = key secret null "File whose first line is the token for the control server.";
    server-addr = key str "localhost:19190" "Control server host:port.";
    server-cas = key path null "PEM file of the CA(s) that sign the control server's certificate (default: certifi's bundle).";
    server-name = key str null "Name checked in the control server's certificate (default: the host of server-addr).";
    direct-addr = key str ":19192" "UDP address for peers and for reaching control.";
    server-tcp-addr = key str null "Control server over TLS-over-TCP (host:port), for networks that block UDP.";
    udp = key str "auto" "auto (TCP after a few seconds without UDP) or never (TCP only).";
    status-addr = key str null "HTTP status endpoint (JSON at /, Prometheus at /metrics); keep it on loopback.";
  };

  server = {
    addr = key str ":19190" "Control UDP address.";
    cert-file = key path null "Server certificate (chain, leaf first), PEM.";
    key-file = key secret null "Server key, PEM.";
    tokens-file = key secret null "Client tokens, one per line.";
    relay-addr = key str ":19191" "Relay UDP address.";
    tcp-addr = key str null "Control over TLS-over-TCP (e.g. :443), for clients whose network blocks UDP.";
    relay-tcp-addr = key str null "Relay over TLS-over-TCP (e.g. :8443), advertised beside the UDP address.";
    relay-hostname = key str "localhost" "Host advertised to clients for the relay.";
    status-addr = key str null "HTTP status endpoint; keep it on loopback.";
    store-dir = key str null "Where the store is kept across restarts (the module sets the state directory, /var/lib/connet-server).";
  };

  control = {
    addr = key str ":19190" "UDP address for clients and relays.";
    tcp-addr = key str null "Control over TLS-over-TCP (e.g. :443), for clients whose network blocks UDP.";
    cert-file = key path null "Certificate (chain, leaf first), PEM.";
    key-file = key secret null "Key, PEM.";
    client-tokens-file = key secret null "Client tokens, one per line.";
    relay-tokens-file = key secret null "Relay tokens, one per line; needed to accept relays.";
    status-addr = key str null "HTTP status endpoint; keep it on loopback.";
    store-dir = key str null "Where the store is kept across restarts (the module sets the state directory, /var/lib/connet-control).";
  };

  relay = {
    token-file = key secret null "File whose first line is the relay token.";
    addr = key str ":19191" "Relay UDP address.";
    tcp-addr = key str null "Relay over TLS-over-TCP (e.g. :8443), for clients whose network blocks UDP.";
    hostname = key str "localhost" "Host advertised to clients.";
    control-addr = key str "localhost:19190" "Control server host:port.";
    control-cas = key path null "PEM CA file for the control server's certificate (default: certifi's bundle).";
    control-name = key str null "Name checked in the control server's certificate (default: the host of control-addr).";
    status-addr = key str null "HTTP status endpoint; keep it on loopback.";
    store-dir = key str null "Where the store is kept across restarts (the module sets the state directory, /var/lib/connet-relay).";
  };

  # UDP ports openFirewall opens: the port of each of these address keys
  udpAddrs = {
    client = [ "direct-addr" ];
    server = [ "addr" "relay-addr" ];
    control = [ "addr" ];
    relay = [ "addr" ];
  };

  # TCP ports openFirewall opens: the TLS-over-TCP addresses, where set
  tcpAddrs = {
    client = [ ];
    server = [ "tcp-addr" "relay-tcp-addr" ];
    control = [ "tcp-addr" ];
    relay = [ "tcp-addr" ];
  };
}
