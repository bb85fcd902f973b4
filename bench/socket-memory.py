#!/usr/bin/env python3
"""The kernel's memory per idle TCP socket, for sizing (docs/production.md).

Opens N loopback connections (2N sockets: both ends are on this machine), leaves them idle,
and reports how much /proc/meminfo's Slab grew per socket and how many pages of TCP buffer
memory /proc/net/sockstat counts for them. Idle sockets hold their kernel structures and
no buffers: the send and receive buffers are allocated only while data is queued.

    python3 bench/socket-memory.py 8000     # needs a hard open-file limit above 2N

Slab is machine-wide: run it on a quiet machine, and more than once.
"""

import resource
import socket
import sys
import time


def slab_kib():
    for line in open("/proc/meminfo"):
        if line.startswith("Slab:"):
            return int(line.split()[1])
    raise SystemExit("no Slab line in /proc/meminfo")


def tcp_mem_pages():
    for line in open("/proc/net/sockstat"):
        if line.startswith("TCP:"):
            fields = line.split()
            return int(fields[fields.index("mem") + 1])
    raise SystemExit("no TCP line in /proc/net/sockstat")


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 8000
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard != resource.RLIM_INFINITY and hard < 2 * n + 16:
        raise SystemExit(f"the hard open-file limit ({hard}) is below {2 * n + 16}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    time.sleep(0.5)
    slab_before, pages_before = slab_kib(), tcp_mem_pages()
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4096)
    held = []
    for _ in range(n):
        client = socket.create_connection(listener.getsockname())
        server, _ = listener.accept()
        held += [client, server]
    time.sleep(1)
    slab_after, pages_after = slab_kib(), tcp_mem_pages()

    grown = slab_after - slab_before
    print(
        f"{n} idle connections ({2 * n} sockets): Slab +{grown} KiB, "
        f"{grown / (2 * n):.2f} KiB per socket; TCP buffer memory +{pages_after - pages_before} pages"
    )


if __name__ == "__main__":
    main()
