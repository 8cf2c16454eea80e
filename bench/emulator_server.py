"""The emulator for benchmarks: loopback, a free port, no rate limit; prints its URL, then serves.

`comm100-sync emulator` keeps the production-like limit of 300 calls per 5 minutes, which a
benchmark of hundreds of cycles would hit; this is the same Emulator with the limit off. Runs in
its own process so that serving 100,000 platforms costs the measured processes nothing.

TCP_NODELAY: the handler sends the head and the body in two writes, so with Nagle's algorithm
the body waits for the client's delayed ACK of the head: about 40 ms on the first GET after the
token POST of every fresh process. A real API front end does not do that, and the constant
would be added to both sides of every cold comparison, so the benchmark turns it off.
"""

from __future__ import annotations

import signal
import sys

from sync.emulator import Emulator
from sync.emulator.handler import EmulatorHandler


def main() -> None:
    EmulatorHandler.disable_nagle_algorithm = True  # socketserver sets TCP_NODELAY per connection
    emulator = Emulator(host="127.0.0.1", port=0, rate_limit=None)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    emulator.start()
    print(emulator.url, flush=True)
    sys.stdout.close()
    emulator.serve_forever()


if __name__ == "__main__":
    main()
