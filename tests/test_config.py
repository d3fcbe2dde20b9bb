from __future__ import annotations

from pathlib import Path

import pytest

from callward.config import load_config
from callward.errors import ConfigError


def test_defaults_are_embedded() -> None:
    cfg = load_config(environ={})
    assert cfg.storage.postgres_url is None
    assert cfg.edge.listen == ["udp:127.0.0.1:5060"]


def test_yaml_and_env_override(tmp_path: Path) -> None:
    f = tmp_path / "c.yaml"
    f.write_text("sip:\n  max_headers: 40\nedge:\n  realm: example.test\n")
    cfg = load_config(f, environ={"CALLWARD_EDGE__REALM": "env.test"})
    assert cfg.sip.max_headers == 40
    assert cfg.edge.realm == "env.test"


@pytest.mark.parametrize(
    ("text", "needle"),
    [("sip:\n  max_headers: 2\n", "sip.max_headers"), ("- a\n", "mapping"), ("a: [\n", "YAML")],
)
def test_bad_config_is_one_line(tmp_path: Path, text: str, needle: str) -> None:
    f = tmp_path / "c.yaml"
    f.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(f, environ={})
    assert needle in str(info.value)
    assert "\n" not in str(info.value)
