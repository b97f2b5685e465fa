"""Port mapping on the client's router (PCP, NAT-PMP, UPnP IGD) for its direct socket:
the codecs (``natpmp``, ``pcp``: sans-I/O), the gateway (``gateway``), UPnP through
async-upnp-client (``upnp``) and the keeper that asks, renews and deletes (``mapper``)."""
