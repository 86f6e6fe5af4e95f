"""Process-level settings that must be in place before JAX starts."""

from __future__ import annotations

import os
import sys

HUGEPAGE_MALLOC = "glibc.malloc.hugetlb=1"


def ensure_hugepage_malloc(argv: list[str]) -> None:
    """Re-execute this process once with glibc's transparent-huge-page malloc.

    XLA:CPU allocates its 20-300 MB activation buffers afresh every step; with
    small pages each one pays page faults that cost more than the compute
    (the seed CNN's train step ran 1.4-2.8x faster with this setting, see
    benchmarks/README.md). glibc reads the tunable only at start-up, hence the
    exec. KPJAX_NO_REEXEC=1 turns it off.
    """
    tunables = os.environ.get("GLIBC_TUNABLES", "")
    if not sys.platform.startswith("linux") or "glibc.malloc.hugetlb" in tunables or os.environ.get("KPJAX_NO_REEXEC"):
        return
    os.environ["GLIBC_TUNABLES"] = f"{tunables}:{HUGEPAGE_MALLOC}" if tunables else HUGEPAGE_MALLOC
    os.execv(sys.executable, [sys.executable, *argv])
