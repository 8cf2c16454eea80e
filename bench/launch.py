"""Run a command and write its own wall time, CPU and peak RSS: `python -S launch.py OUT CMD...`.

Why a launcher: Linux carries ru_maxrss across exec, so a child spawned straight from the
benchmark runner (vfork/posix_spawn share the runner's memory until exec) reports the
runner's peak RSS, not its own. This process stays small (no site, no imports beyond os, sys
and time) and fork()s the command, so the command's peak RSS is measured on top of this
launcher's few megabytes only (run.py reports that floor). Kept free of any import it does not
need for the same reason.
"""

import os
import sys
import time


def main() -> int:
    out, cmd = sys.argv[1], sys.argv[2:]
    start = time.perf_counter()
    pid = os.fork()
    if pid == 0:
        try:
            os.execvp(cmd[0], cmd)
        finally:
            os._exit(127)
    _pid, status, usage = os.wait4(pid, 0)
    wall = time.perf_counter() - start
    code = os.waitstatus_to_exitcode(status)
    with open(out, "w") as f:
        f.write(f"{wall!r} {usage.ru_utime + usage.ru_stime!r} {usage.ru_maxrss} {code}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
