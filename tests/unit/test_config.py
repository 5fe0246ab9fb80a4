"""`mrx serve` settings: file, variables and flags merged and validated, errors naming the key."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from gateway.cli import SERVE_FLAGS, build_parser
from gateway.config import SETTINGS, ConfigFileError, load_serve_config

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def files(tmp_path: Path) -> Path:
    (tmp_path / "gw.pem").write_text("not read by the loader\n")
    (tmp_path / "federation").mkdir()
    return tmp_path


def _write(directory: Path, text: str) -> Path:
    path = directory / "mrx.toml"
    path.write_text(text)
    return path


BASE = '[serve]\ngateway_key = "gw.pem"\ngateway_keyid = "MRX-GW/demo"\nfederation = "federation"\n'


def test_flags_beat_variables_beat_the_file_and_sources_are_named(files):
    path = _write(files, BASE + "workers = 4\nfronts = 2\n[serve.metrics]\nport = 9464\n")
    cfg = load_serve_config(
        path,
        env={"MRX_SERVE_FRONTS": "3", "MRX_SERVE_METRICS_PORT": "9500"},
        flags={"serve.metrics.port": 9600},
    )
    assert cfg["serve.workers"] == 4
    assert cfg.values["serve.workers"].source == f"{path}:serve.workers"
    assert cfg["serve.fronts"] == 3 and cfg.values["serve.fronts"].source == "MRX_SERVE_FRONTS"
    assert cfg["serve.metrics.port"] == 9600 and cfg.values["serve.metrics.port"].source == "--metrics-port"
    assert (
        cfg["serve.checkpoint_interval"] == 10.0
        and cfg.values["serve.checkpoint_interval"].source == "default"
    )
    # Relative paths are the file's directory's, wherever mrx runs from.
    assert cfg["serve.gateway_key"] == files / "gw.pem"
    bare = load_serve_config(_write(files, BASE + 'database = "data/mrx.db"\n'), env={})
    assert bare["serve.database"] == str(files / "data" / "mrx.db")


def test_the_older_database_variable_is_below_the_file(files):
    path = _write(files, BASE + 'database = "sqlite:///from-file.db"\n')
    cfg = load_serve_config(path, env={"MRX_DATABASE_URL": "sqlite:///legacy.db"})
    assert cfg["serve.database"] == "sqlite:///from-file.db"
    cfg = load_serve_config(_write(files, BASE), env={"MRX_DATABASE_URL": "sqlite:///legacy.db"})
    assert cfg.values["serve.database"].source == "MRX_DATABASE_URL"


@pytest.mark.parametrize(
    ("extra", "env", "message"),
    [
        ("wokers = 4\n", {}, r"mrx\.toml: unknown setting serve\.wokers \(did you mean serve\.workers\?\)"),
        (
            "[serve.tls]\ncert = 'gw.pem'\n",
            {},
            r"mrx\.toml:serve\.tls\.cert: serve\.tls\.cert and serve\.tls\.key",
        ),
        ('workers = "eight"\n', {}, r"mrx\.toml:serve\.workers: must be a whole number, not 'eight'"),
        ("fronts = 0\n", {}, r"mrx\.toml:serve\.fronts: must be at least 1, not 0"),
        ("checkpoint_interval = true\n", {}, r"mrx\.toml:serve\.checkpoint_interval: must be a number"),
        ("[serve.log]\nformat = 'xml'\n", {}, r"mrx\.toml:serve\.log\.format: must be one of text, json"),
        ('address = "7443"\n', {}, r"mrx\.toml:serve\.address: must be host:port"),
        (
            "",
            {"MRX_SERVE_WOKERS": "4"},
            r"MRX_SERVE_WOKERS: unknown setting variable \(did you mean MRX_SERVE_WORKERS",
        ),
        ("", {"MRX_SERVE_METRICS_PORT": "70000"}, r"MRX_SERVE_METRICS_PORT: must be at most 65535"),
        ("[serve.metrics]\nport = 7443\n", {}, r"the metrics port must differ from the gRPC port 7443"),
        (
            '[serve.tls]\ncert = "gw.pem"\nkey = "missing.key"\n',
            {},
            r"serve\.tls\.key: .*missing\.key does not exist",
        ),
    ],
)
def test_bad_settings_are_refused_naming_where_and_why(files, extra, env, message):
    with pytest.raises(ConfigFileError, match=message):
        load_serve_config(_write(files, BASE + extra), env=env)


def test_a_required_setting_says_every_way_to_give_it(files):
    path = _write(files, '[serve]\ngateway_keyid = "MRX-GW/demo"\n')
    with pytest.raises(ConfigFileError) as refused:
        load_serve_config(path, env={})
    assert "serve.gateway_key is required: set it in the file, MRX_SERVE_GATEWAY_KEY or --gateway-key" in str(
        refused.value
    )


def test_not_toml_is_refused_with_the_file_name(files):
    with pytest.raises(ConfigFileError, match=r"mrx\.toml: not valid TOML"):
        load_serve_config(_write(files, "[serve\n"), env={})


def test_the_rendered_configuration_masks_the_database_password(files):
    path = _write(files, BASE + 'database = "postgresql+psycopg://mrx:s3cret@db:5432/mrx"\n')
    text = load_serve_config(path, env={}).render()
    assert "s3cret" not in text
    assert "postgresql+psycopg://mrx:***@db:5432/mrx" in text
    assert re.search(r"^workers = 8  # default$", text, re.M)


def test_every_setting_is_a_serve_flag_and_every_serve_flag_a_setting():
    serve = build_parser()._subparsers._group_actions[0].choices["serve"]  # type: ignore[union-attr]
    flags = {o for a in serve._actions for o in a.option_strings} - {"-h", "--help", "--config"}
    assert flags == {s.flag for s in SETTINGS}
    assert set(SERVE_FLAGS) == {s.key for s in SETTINGS}


def test_every_setting_and_its_variable_is_documented():
    guide = (ROOT / "docs" / "operations.md").read_text(encoding="utf-8")
    for setting in SETTINGS:
        assert f"`{setting.key}`" in guide, setting.key
        assert f"`{setting.env}`" in guide, setting.env
        assert f"`{setting.flag}`" in guide, setting.flag
