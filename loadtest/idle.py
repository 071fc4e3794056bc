#!/usr/bin/env python3
"""Idle keep-alive client connections, for the memory figure of compare.py.

usage: idle.py PORT COUNT [tls]
On "open" (stdin): opens COUNT connections, sends one GET on each and reads its whole
response, then prints "ready OPENED" (the total so far) and keeps them all open; "open N"
opens N more the same way. On "close" (or end of input): closes them all and exits.
With "tls", each connection is a TLS handshake first (certificate not verified).
"""

import asyncio
import ssl
import sys

REQUEST = b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n"


async def one(port, conns, sem, tls):
    async with sem:
        try:
            r, w = await asyncio.wait_for(asyncio.open_connection(
                "127.0.0.1", port, ssl=tls, server_hostname="bench.example" if tls else None), 30)
            w.write(REQUEST)
            head = await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), 30)
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            await asyncio.wait_for(r.readexactly(length), 30)
            conns.append(w)
        except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, ssl.SSLError):
            pass


async def main():
    port, count = int(sys.argv[1]), int(sys.argv[2])
    tls = None
    if sys.argv[3:] == ["tls"]:
        tls = ssl.create_default_context()
        tls.check_hostname = False
        tls.verify_mode = ssl.CERT_NONE
    loop = asyncio.get_running_loop()
    conns = []
    sem = asyncio.Semaphore(256)
    while True:
        words = (await loop.run_in_executor(None, sys.stdin.readline)).split()
        if not words or words[0] != "open":
            break
        n = int(words[1]) if len(words) > 1 else count
        await asyncio.gather(*(one(port, conns, sem, tls) for _ in range(n)))
        print(f"ready {len(conns)}", flush=True)
    for w in conns:
        w.close()


asyncio.run(main())
