"""The harness itself: an address and port it gives a daemon stay free until the
daemon binds them."""

import random

from conftest import pick_addr, pick_port, release_addrs
from fdfs_helpers import LISTEN_PORTS
from nginx_fixtures import free_port_on


def ephemeral_range():
    with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
        low, high = f.read().split()[:2]
    return int(low), int(high)


def test_listen_ports_lie_below_the_ephemeral_range():
    """A port the kernel may give an outgoing connection (our daemons bind theirs to
    their own address) could be taken between the check and the daemon's start: the
    daemon then fails with "Address already in use". None is ever picked."""
    low, _ = ephemeral_range()
    assert LISTEN_PORTS[1] < low
    picked = [pick_addr() for _ in range(20)]
    try:
        ip = picked[0][0]
        ports = [port for _, port in picked] + [pick_port(ip) for _ in range(20)]
        ports += [free_port_on(ip) for _ in range(20)]
        assert all(LISTEN_PORTS[0] <= p < low for p in ports), sorted(ports)[-5:]
        # The range is wide enough that picks rarely repeat.
        assert len(set(ports)) > 50
    finally:
        release_addrs({ip for ip, _ in picked})


def test_listen_port_draws_from_the_whole_range():
    from fdfs_helpers import listen_port
    rnd = random.Random(7)
    ports = [listen_port(rnd) for _ in range(2000)]
    assert min(ports) >= LISTEN_PORTS[0] and max(ports) <= LISTEN_PORTS[1]
    assert max(ports) - min(ports) > (LISTEN_PORTS[1] - LISTEN_PORTS[0]) * 0.9
