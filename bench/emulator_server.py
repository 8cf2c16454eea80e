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
seconds (PUT /_emulator/latency changes it later). `--rate-limit CALLS/SECONDS` turns the
per-address limit on (a 429 with Retry-After beyond it). `--partners K` adds K - 1 partners
beside the first (see partner_login), each with the same generated sites as the first (or the
default account without `--sites`).
"""

from __future__ import annotations

import argparse
import signal
import sys

from sync.emulator import Emulator
from sync.emulator.data import populated_document
from sync.emulator.handler import EmulatorHandler

# The partners --partners adds: 20000, 30000, …, as tests/e2e/test_scale_out.py's globex.
PARTNER_BASE_ID = 10_000


def partner_login(index: int) -> dict[str, str]:
    """The partner id and credentials of the index-th partner (2, 3, …) that --partners adds."""
    return {
        "partner_id": str(PARTNER_BASE_ID * index),
        "client_id": f"bench-client-{index}",
        "email": f"bench-{index}@example.com",
        "password": f"bench-password-{index}",
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sites", type=int, help="populate this many sites")
    parser.add_argument("--per-site", type=int, default=10, help="items per per-site list")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--latency", type=float, default=0.0, help="seconds per API answer")
    parser.add_argument("--rate-limit", help="CALLS/SECONDS per client address (default: none)")
    parser.add_argument("--partners", type=int, default=1, help="partner accounts, 1 or more")
    args = parser.parse_args()
    EmulatorHandler.disable_nagle_algorithm = True  # socketserver sets TCP_NODELAY per connection
    emulator = Emulator(host="127.0.0.1", port=0, rate_limit=None, latency_seconds=args.latency)
    if args.rate_limit:
        calls, _, seconds = args.rate_limit.partition("/")
        emulator.set_rate_limit(int(calls), float(seconds))
    data = None
    if args.sites is not None:
        emulator.populate(args.sites, per_site=args.per_site, seed=args.seed)
        data = populated_document(args.sites, per_site=args.per_site, seed=args.seed)
    for index in range(2, args.partners + 1):
        login = partner_login(index)
        partner = login.pop("partner_id")
        emulator.add_partner(partner, **login, data=data)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    emulator.start()
    print(emulator.url, flush=True)
    sys.stdout.close()
    emulator.serve_forever()


if __name__ == "__main__":
    main()
