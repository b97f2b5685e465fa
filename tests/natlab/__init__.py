"""The NAT lab: network namespaces, nftables NAT routers and real connet processes."""
