"""alchem.memory: the one malloc policy of training, the ASE calculator and (in C++)
the pair style keeps freed blocks of any size in the process."""

import platform
import subprocess
import sys

import pytest

SCRIPT = """
import sys
import numpy as np
from alchem.memory import reuse_freed_memory


def rss_kb():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS"):
            return int(line.split()[1])


if sys.argv[1] == "reuse":
    assert reuse_freed_memory()
released = []
for megabytes in (64, 512):  # above glibc's largest mmap threshold (32 MiB)
    block = np.ones(megabytes * 2**17)
    before = rss_kb()
    del block
    released.append(before - rss_kb())
print(*released)
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's malloc only")
def test_freed_blocks_stay_for_reuse():
    released = {}
    for mode in ("default", "reuse"):
        out = subprocess.run(
            [sys.executable, "-c", SCRIPT, mode],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        released[mode] = [int(kb) for kb in out.split()]
    # glibc's default unmaps large blocks when freed: page faults at the next step
    assert released["default"][0] > 60_000 and released["default"][1] > 500_000
    assert max(released["reuse"]) < 10_000
