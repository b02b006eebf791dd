"""Who may talk to AWS: boto3 and botocore stay in ``rotator/aws/``, and the core reaches AWS through the ports."""

from __future__ import annotations

from helpers import ROTATOR_SOURCES, imported_modules, modules_importing

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


def test_only_the_aws_package_imports_boto3_or_botocore() -> None:
    importers = modules_importing("boto3", "botocore")
    assert importers
    assert {name for name in importers if not name.startswith("rotator/aws/")} == set()


def test_the_core_does_not_import_the_aws_adapters() -> None:
    importers = {
        name
        for name in CORE
        if any(
            module == "rotator.aws" or module.startswith("rotator.aws.")
            for module in imported_modules(ROTATOR_SOURCES / name)
        )
    }
    assert importers == set()
