"""Every YAML in configs/ names its command in its first line and parses with it."""

from pathlib import Path

import pytest
import yaml

from sarm.cli import main

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "configs").rglob("*.yaml"))


def test_there_are_configs():
    assert len(CONFIGS) >= 4


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: str(p.relative_to(ROOT)))
def test_config_parses_with_its_command(path, capsys, monkeypatch):
    first = path.read_text().splitlines()[0].split()
    assert first[:2] == ["#", "sarm"] and first[3:5] == ["--config", str(path.relative_to(ROOT))], (
        "first line must be '# sarm <command> --config <path>'"
    )
    monkeypatch.chdir(ROOT)
    with pytest.raises(SystemExit) as exit_info:
        main([first[2], "--config", str(path.relative_to(ROOT)), "--print_config"])
    assert exit_info.value.code in (0, None)
    printed = yaml.safe_load(capsys.readouterr().out)
    assert set(yaml.safe_load(path.read_text())) <= set(printed)  # the full config holds every key of the file
