"""Optional C accelerators (SIP parser, capture analysis, the relay's steady-state RTP
forwarding in relay/fastpath.py); everything else is configured in pyproject.toml.

The extension is built when a C compiler and the Python headers (Debian: python3-dev) are
present. Without them, or with CALLWARD_PURE_PYTHON=1 set, the build silently installs the pure
Python package, which is the tested reference (tests/sip/test_accelerator.py,
tests/quality/test_accel.py, tests/relay/test_fastpath.py).
"""

import os

from setuptools import Extension, setup

ext_modules = []
if os.environ.get("CALLWARD_PURE_PYTHON", "") in ("", "0"):
    ext_modules.append(
        Extension(
            "callward.sip._speedups",
            sources=["src/callward/sip/_speedups.c"],
            depends=["src/callward/sip/_speedups_grammar.h"],  # included by _speedups.c
            optional=True,  # a failed compile is a warning: the pure parser is used
        )
    )
    ext_modules.append(
        Extension(
            "callward.quality._accel",
            sources=["src/callward/quality/_accel.c"],
            optional=True,  # a failed compile is a warning: the pure Python/numpy path is used
        )
    )
    ext_modules.append(
        Extension(
            "callward.relay._fastpath",
            sources=["src/callward/relay/_fastpath.c"],
            optional=True,  # without it the relay's reference packet path runs alone
        )
    )

setup(ext_modules=ext_modules)
