"""The lazy package exports (callward/lazy.py): each package lists a name once, under
``if TYPE_CHECKING:``; every name of ``__all__`` must resolve from there, to the object its
home module defines, and nothing else may be listed."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

from callward.lazy import type_checking_imports

PACKAGES = ("callward.sip", "callward.rtp", "callward.quality")


@pytest.mark.parametrize("name", PACKAGES)
def test_all_names_resolve_from_the_type_checking_block(name: str) -> None:
    pkg = importlib.import_module(name)
    assert pkg.__file__ is not None
    home = type_checking_imports(Path(pkg.__file__).read_text(encoding="utf-8"))
    assert set(pkg.__all__) == set(home)
    for export in pkg.__all__:
        assert getattr(pkg, export) is getattr(importlib.import_module(home[export]), export)
    with pytest.raises(AttributeError):
        pkg.no_such_name  # noqa: B018
