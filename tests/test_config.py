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


def test_env_overrides_list_and_mapping_fields() -> None:
    """docs/operations.md: every field can be overridden from the environment, lists and
    mappings as YAML flow values."""
    cfg = load_config(
        environ={
            "CALLWARD_EDGE__LISTEN": "[udp:127.0.0.1:5070, 'tcp:[::1]:5070']",
            "CALLWARD_EDGE__ROUTES": "{alice: 'sip:alice@10.0.0.1'}",
            "CALLWARD_SECURITY__FRAUD_DEFAULT": "{cps: 2}",
            "CALLWARD_EDGE__REALM": "plain.string",
        }
    )
    assert cfg.edge.listen == ["udp:127.0.0.1:5070", "tcp:[::1]:5070"]
    assert cfg.edge.routes == {"alice": "sip:alice@10.0.0.1"}
    assert cfg.security.fraud_default.cps == 2.0
    assert cfg.edge.realm == "plain.string"
    with pytest.raises(ConfigError) as info:
        load_config(environ={"CALLWARD_MEDIA__RELAYS": "[a, "})
    assert "CALLWARD_MEDIA__RELAYS" in str(info.value) and "\n" not in str(info.value)
