"""Web settings: bearer tokens (plain or sha256:), roles, and one-line errors for bad files."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from callward.errors import ConfigError
from callward.web.settings import ANONYMOUS, Role, load_web_settings


def test_load_tokens_and_authenticate(tmp_path: Path) -> None:
    digest = hashlib.sha256(b"legal-secret").hexdigest()
    f = tmp_path / "web.yaml"
    f.write_text(
        "page_size: 5\n"
        "tokens:\n"
        "  plain-token: {actor: alice@support}\n"
        f"  'sha256:{digest}': {{actor: ivan@legal, role: investigator}}\n",
        encoding="utf-8",
    )
    s = load_web_settings(f)
    assert s.page_size == 5
    assert s.authenticate("plain-token").actor == "alice@support"  # type: ignore[union-attr]
    ivan = s.authenticate("legal-secret")
    assert ivan is not None and ivan.role is Role.INVESTIGATOR and ivan.may_reveal
    assert s.authenticate(None) is None
    assert s.authenticate("sha256:" + digest) is None
    assert s.authenticate("plain-token ") is None


def test_no_tokens_means_anonymous_viewer() -> None:
    s = load_web_settings(None)
    assert s.authenticate(None) is ANONYMOUS and not ANONYMOUS.may_reveal
    assert s.authenticate("anything") is None


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("tokens: [1, 2]", "tokens"),
        ("page_size: 0", "page_size"),
        ("tokens: {t: {actor: x, role: root}}", "role"),
        ("colour: blue", "colour"),
        ("- a\n- b", "mapping"),
        ("a: [", "YAML"),
    ],
)
def test_bad_settings_files_are_one_line_config_errors(
    tmp_path: Path, text: str, needle: str
) -> None:
    f = tmp_path / "web.yaml"
    f.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        load_web_settings(f)
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_web_settings(tmp_path / "nope.yaml")
