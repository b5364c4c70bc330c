"""The installed package layout: every subpackage is listed, export/ installs as edgerec.export."""

import tomllib
from pathlib import Path

import edgerec
import edgerec.export

ROOT = Path(__file__).resolve().parents[1]


def test_every_package_directory_is_declared():
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    declared = set(cfg["packages"])
    found = {
        ".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "edgerec").rglob("__init__.py")
    } | {"edgerec." + ".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "export").rglob("__init__.py")}
    assert found == declared
    assert cfg["package-dir"]["edgerec.export"] == "export"


def test_export_is_a_subpackage_not_a_top_level_module():
    assert Path(edgerec.export.__file__).parent.name == "export"
    assert edgerec.export.__name__ == "edgerec.export"
