# serviceConfig shared by every connet unit: the hardening of packaging/systemd/*.service
# (a test checks that the two agree). A transient user with no capabilities and a read-only
# view of the system; UDP and TCP sockets, and netlink to list the interfaces (a client
# advertises its local addresses to its peers).
{
  DynamicUser = true;
  CapabilityBoundingSet = "";
  AmbientCapabilities = "";
  NoNewPrivileges = true;
  ProtectSystem = "strict";
  ProtectHome = true;
  PrivateTmp = true;
  PrivateDevices = true;
  PrivateUsers = true;
  ProtectClock = true;
  ProtectHostname = true;
  ProtectKernelTunables = true;
  ProtectKernelModules = true;
  ProtectKernelLogs = true;
  ProtectControlGroups = true;
  ProtectProc = "invisible";
  ProcSubset = "pid";
  RestrictAddressFamilies = "AF_INET AF_INET6 AF_UNIX AF_NETLINK";
  RestrictNamespaces = true;
  RestrictRealtime = true;
  RestrictSUIDSGID = true;
  LockPersonality = true;
  RemoveIPC = true;
  SystemCallArchitectures = "native";
  SystemCallFilter = [ "@system-service" "~@privileged @resources" ];
  UMask = "0077";
  LimitNOFILE = 65536;
  Restart = "on-failure";
  RestartSec = "5s";
  # exit code 2 is a configuration error: restarting would only repeat it
  RestartPreventExitStatus = 2;
}
