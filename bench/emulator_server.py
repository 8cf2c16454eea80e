"""The emulator for benchmarks: loopback, a free port, no rate limit; prints its URL, then serves.

`comm100-sync emulator` keeps the production-like limit of 300 calls per 5 minutes, which a
benchmark of hundreds of cycles would hit; this is the same Emulator with the limit off. Runs in
its own process so that serving 100,000 platforms costs the measured processes nothing.

TCP_NODELAY: the handler sends the head and the body in two writes, so with Nagle's algorithm
the body waits for the client's delayed ACK of the head: about 40 ms on the first GET after the
token POST of every fresh process. A real API front end does not do that, and the constant
would be added to both sides of every cold comparison, so the benchmark turns it off.

    emulator_server.py                                   # the default account
    emulator_server.py --sites 200 --per-site 10 --latency 0.05

`--sites N` replaces the sites and every per-site list with Emulator.populate(N, per_site); the
platforms, products and plans stay the default ones. `--latency S` delays every API answer by S
seconds (PUT /_emulator/latency changes it later).
"""

from __future__ import annotations

import argparse
import signal
import sys

from sync.emulator import Emulator
from sync.emulator.handler import EmulatorHandler


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sites", type=int, help="populate this many sites")
    parser.add_argument("--per-site", type=int, default=10, help="items per per-site list")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--latency", type=float, default=0.0, help="seconds per API answer")
    args = parser.parse_args()
    EmulatorHandler.disable_nagle_algorithm = True  # socketserver sets TCP_NODELAY per connection
    emulator = Emulator(host="127.0.0.1", port=0, rate_limit=None, latency_seconds=args.latency)
    if args.sites is not None:
        emulator.populate(args.sites, per_site=args.per_site, seed=args.seed)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    emulator.start()
    print(emulator.url, flush=True)
    sys.stdout.close()
    emulator.serve_forever()


if __name__ == "__main__":
    main()
