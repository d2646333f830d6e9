"""Configuration: defaults, then TOML file, then flags; bad values named."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from dicom_node.config import CallerRule, ConfigError, NodeConfig, load_config
from dicom_node.server import add_arguments, config_from_args


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(argv)


def test_defaults_then_file_then_flags(tmp_path: Path) -> None:
    toml = tmp_path / "node.toml"
    toml.write_text(
        'ae_title = "FILE_AE"\nport = 4242\nquiet_period_s = 1\n'
        '[[allowed_callers]]\nae_title = "CT"\nhosts = ["127.0.0.1"]\n'
        '[[allowed_callers]]\nae_title = "TPS"\n'
    )
    config = config_from_args(_args("--config", str(toml), "--port", "5000", "--store", str(tmp_path / "s")))
    assert config.ae_title == "FILE_AE" and config.port == 5000 and config.quiet_period_s == 1.0
    assert config.store_dir == tmp_path / "s" and config.max_associations == NodeConfig().max_associations
    assert config.allowed_callers == (CallerRule("CT", ("127.0.0.1",)), CallerRule("TPS"))
    assert config.caller_allowed("CT", "127.0.0.1") and not config.caller_allowed("CT", "10.0.0.9")
    assert config.caller_allowed("TPS", "10.0.0.9") and not config.caller_allowed("OTHER", "127.0.0.1")
    flags = config_from_args(_args("--allow", "A@127.0.0.1,127.0.0.2", "--allow", "B"))
    assert flags.allowed_callers == (CallerRule("A", ("127.0.0.1", "127.0.0.2")), CallerRule("B"))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("colour = 1\n", "unknown setting"),
        ('port = "11112"\n', "port"),
        ("port = 70000\n", "port"),
        ('ae_title = "MUCH_TOO_LONG_AE_TITLE"\n', "ae_title"),
        ("[tls]\ncert_file = 'a'\n", "key_file"),
        ("[tls]\ncert_file = 'a'\nkey_file = 'b'\nrequire_client_cert = true\n", "ca_file"),
        ("quiet_period_s = 0\n", "quiet_period_s"),
        ("port = \n", "not valid TOML"),
    ],
)
def test_bad_files_are_named(tmp_path: Path, text: str, message: str) -> None:
    toml = tmp_path / "bad.toml"
    toml.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_config(toml)


def test_effective_config_is_plain_values() -> None:
    described = NodeConfig().describe()
    assert described["ae_title"] == "SEEDGUIDE" and described["store_dir"] == "seedguide-store"
