import subprocess
import sys

import pytest

from edgerec import cli, host

GLIBC = host._glibc() is not None

# Allocates a 64 MB array and reports, from glibc's mallinfo2, the bytes held in mmapped
# blocks while it lives and the free bytes kept in the heap after it is freed; with TUNE
# set it calls tune_malloc first.
PROBE = """
import ctypes, os
import numpy as np
class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                              "fsmblks", "uordblks", "fordblks", "keepcost")]
libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = MallInfo2
if os.environ.get("TUNE"):
    from edgerec.host import tune_malloc
    assert tune_malloc()
a = np.ones(8_000_000)
mapped = libc.mallinfo2().hblkhd
del a
print(mapped, libc.mallinfo2().fordblks)
"""
MB64 = 64_000_000


def probe(tune: bool) -> tuple[int, int]:
    env = {"PATH": "", "TUNE": "1" if tune else ""}
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True)
    mapped, kept = map(int, out.stdout.split())
    return mapped, kept


@pytest.mark.skipif(not GLIBC, reason="tune_malloc applies to glibc only (this platform has none)")
def test_tuned_malloc_keeps_large_blocks_in_the_heap():
    mapped, kept = probe(tune=False)
    assert mapped >= MB64 and kept < MB64, f"glibc's default should mmap the block and unmap it: {mapped, kept}"
    mapped, kept = probe(tune=True)
    assert mapped < MB64, f"tuned: the block should come from the heap, {mapped} bytes were mmapped"
    assert kept >= MB64, f"tuned: the freed block should stay in the heap for reuse, {kept} bytes kept"


def test_tune_malloc_leaves_malloc_alone_when_told_or_already_tuned():
    assert host.tune_malloc({"EDGEREC_TUNE_MALLOC": "0"}) is False
    assert host.tune_malloc({"MALLOC_TRIM_THRESHOLD_": "1000"}) is False
    assert host.tune_malloc({"GLIBC_TUNABLES": "glibc.malloc.mmap_threshold=1000"}) is False
    assert host.tune_malloc({}) is GLIBC


def test_training_and_evaluating_commands_tune_malloc_and_bench_does_not(monkeypatch, tmp_path, capsys):
    calls = []
    monkeypatch.setattr(cli, "tune_malloc", lambda: calls.append(1))
    assert cli.main(["evaluate", "--checkpoint", str(tmp_path / "missing.pt")]) == 2
    assert calls == [1]
    assert cli.main(["bench", str(tmp_path / "missing-bundle")]) == 2
    assert calls == [1]
    assert "missing" in capsys.readouterr().err
