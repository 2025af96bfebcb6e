"""Refuse traffic to some hosts with 403; HTTPS to them is refused at the CONNECT.

    interceptkit --script docs/examples/block_host.py
"""

BLOCKED = ("ads.example", "*.tracker.example")


def setup(proxy):
    for host in BLOCKED:
        proxy.block(host)
