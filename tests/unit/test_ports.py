"""Who may talk to AWS: boto3 and botocore stay in ``rotator/aws/``, and the core reaches AWS through the ports."""

from __future__ import annotations

import ast
from pathlib import Path

ROTATOR = Path(__file__).resolve().parents[2] / "rotator"
#: The core: it decides and acts through ``rotator.ports``, never through the boto3 adapters.
CORE = (
    "model.py",
    "records.py",
    "ports.py",
    "policy.py",
    "roles.py",
    "user_policy.py",
    "durations.py",
    "inventory.py",
    "executor.py",
    "rotation.py",
    "lease.py",
)


def _imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
    return names


def test_only_the_aws_package_imports_boto3_or_botocore() -> None:
    importers = {
        path.relative_to(ROTATOR.parent).as_posix()
        for path in ROTATOR.rglob("*.py")
        if any(name.split(".")[0] in ("boto3", "botocore") for name in _imported_modules(path))
    }
    assert importers
    assert {name for name in importers if not name.startswith("rotator/aws/")} == set()


def test_the_core_does_not_import_the_aws_adapters() -> None:
    importers = {
        name
        for name in CORE
        if any(
            module == "rotator.aws" or module.startswith("rotator.aws.") for module in _imported_modules(ROTATOR / name)
        )
    }
    assert importers == set()
