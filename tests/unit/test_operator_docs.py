"""Issue 15, items 7 and 10: names and snippets an operator copies work as copied; the small CLI rough edges.

Each test reads the shipped file (README, config example, IAM policy, Dockerfile, .dockerignore, docs) or calls the
code that prints what the operator sees, and fails on the defect the issue describes.
"""

from __future__ import annotations

import io
import json
import re
from pathlib import Path
from typing import Any

import yaml

from rotator.cli import build_parser
from rotator.config import Settings, load_settings
from rotator.errors import AwsError, UserError
from rotator.executor import Failure
from rotator.model import Action, Step
from rotator.render import print_table
from rotator.sandbox import _banner

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text(encoding="utf-8")
OPERATIONS = (ROOT / "docs" / "operations.md").read_text(encoding="utf-8")
POLICY: dict[str, Any] = json.loads((ROOT / "deploy" / "iam" / "rotator-policy.json").read_text(encoding="utf-8"))
ROLE = "iam-key-rotator"


# -- item 7: names and snippets -----------------------------------------------------------------------------------


def test_the_role_name_is_the_same_in_the_config_example_the_policy_and_its_readme() -> None:
    config = (ROOT / "config" / "rotator.yaml").read_text(encoding="utf-8")
    config_roles = set(re.findall(r":role/([\w+=,.@-]+)", config)) | set(re.findall(r"role_name: *([\w-]+)", config))
    assumable = json.loads((ROOT / "deploy" / "iam" / "optional" / "assume-role.json").read_text(encoding="utf-8"))
    policy_roles = {re.sub(r".*:role/", "", r) for s in assumable["Statement"] for r in [s["Resource"]]}
    readme_roles = set(re.findall(r":role/([\w+=,.@-]+)", (ROOT / "deploy" / "iam" / "README.md").read_text()))
    assert config_roles == policy_roles == {ROLE}, (config_roles, policy_roles)
    assert readme_roles <= {ROLE, "iam-key-rotator"}, readme_roles


def test_the_policy_covers_the_configs_default_user_path_and_only_tagged_users() -> None:
    default_prefix = Settings().selection.path_prefix
    assert default_prefix == "/"
    for statement in POLICY["Statement"]:
        for resource in [statement["Resource"]] if isinstance(statement["Resource"], str) else statement["Resource"]:
            if ":user/" in resource:
                # "/" covers every path: the resource must say user/*, and the tag condition does the selecting.
                assert resource.endswith(":user/*"), statement["Sid"]


def test_readme_credential_process_lines_name_the_profile_that_reads_the_secret() -> None:
    """Without --profile, `rotator credential-process` under AWS_PROFILE=app would run the profile it serves."""
    lines = [line for line in README.splitlines() if line.startswith("credential_process = rotator")]
    assert lines
    for line in lines:
        assert "--profile " in line, line


def test_the_sandbox_export_line_works_for_the_aws_cli_v1() -> None:
    banner = _banner(
        url="http://127.0.0.1:5000",
        phase=60,
        metrics_port=9464,
        log_path=Path("/tmp/log"),  # noqa: S108 - printed, not opened
        env={"AWS_ENDPOINT_URL": "http://127.0.0.1:5000", "AWS_REGION": "us-east-1", "AWS_ACCESS_KEY_ID": "x"},
        config=Path("/tmp/config.yaml"),  # noqa: S108 - printed, not opened
    )
    (export,) = [line for line in banner.splitlines() if "export " in line]
    assert "AWS_DEFAULT_REGION=us-east-1" in export  # the AWS CLI v1 reads no other region variable
    assert "AWS_REGION=us-east-1" in export


def test_a_cron_from_the_environment_replaces_the_files_interval(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("schedule: {interval: 1h}\n", encoding="utf-8")
    settings = load_settings(str(config), env={"ROTATOR_SCHEDULE__CRON": "0 3 * * *"})
    assert (settings.schedule.cron, settings.schedule.interval) == ("0 3 * * *", None)
    config.write_text("schedule: {cron: '0 3 * * *'}\n", encoding="utf-8")
    settings = load_settings(str(config), env={"ROTATOR_SCHEDULE__INTERVAL": "30m"})
    assert settings.schedule.cron is None and settings.schedule.interval is not None
    assert settings.schedule.interval.total_seconds() == 1800


def test_the_dockerfile_run_example_is_the_one_in_the_operations_doc() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    example = " ".join(line.lstrip("# ").rstrip("\\ ") for line in dockerfile.splitlines() if "docker run" in line)
    assert "-v /etc/rotator:/etc/rotator:ro" in example  # the directory, as docs/operations.md says, not the file
    assert "config.yaml:/etc/rotator/config.yaml" not in dockerfile
    assert "--stop-timeout 90" in example and "--stop-timeout 90" in OPERATIONS


def test_the_dockerignore_allow_list_names_only_files_that_exist() -> None:
    entries = [
        line[1:].rstrip("/")
        for line in (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
        if line.startswith("!")
    ]
    assert entries
    missing = [entry for entry in entries if not (ROOT / entry).exists()]
    assert not missing, missing


def test_no_shipped_doc_cites_a_spec_that_is_not_in_the_repository() -> None:
    shipped = [ROOT / "README.md", ROOT / "Dockerfile", *(ROOT / "docs").glob("*.md"), *(ROOT / "config").iterdir()]
    shipped += [p for p in (ROOT / "deploy").rglob("*") if p.is_file()]
    citing = [str(p.relative_to(ROOT)) for p in shipped if re.search(r"\bSPEC\b|SPEC\.md", p.read_text("utf-8"))]
    assert not citing, citing
    # The invariants the docs name (I1-I10) are defined in the repository itself.
    design = (ROOT / "docs" / "design.md").read_text(encoding="utf-8")
    for number in range(1, 11):
        assert f"- **I{number}**" in design, f"I{number}"


def test_the_readme_states_the_bootstrap_caveat_of_never_two_keys() -> None:
    claim = README.index("never create two keys for one due key")
    assert "user with no key at all" in README[claim : claim + 300]


# -- item 10: small things ------------------------------------------------------------------------------------------


def subcommand_help(name: str) -> str:
    parser = build_parser()
    actions = [a for a in parser._actions if a.dest == "command"]
    return str(actions[0].choices[name].format_help())  # type: ignore[attr-defined]


def test_json_and_revoke_have_help_that_says_what_they_do() -> None:
    for command in ("plan", "inventory"):
        text = " ".join(subcommand_help(command).split())
        assert re.search(r"--json +a JSON array", text), text
    text = " ".join(subcommand_help("rotate").split())
    revoke = text[text.index("--revoke") :]
    assert "the key that was current until now" in revoke  # not "the previous key", which the rotation keeps


def test_a_piped_table_starts_with_its_header_line() -> None:
    out = io.StringIO()  # not a terminal
    print_table([["app", "rotate", "-", "now", "due"]], ["user", "action", "key_id", "due_at", "reason"], out)
    assert out.getvalue().splitlines() == ["user\taction\tkey_id\tdue_at\treason", "app\trotate\t-\tnow\tdue"]
    empty = io.StringIO()
    print_table([], ["user", "action"], empty)
    assert empty.getvalue() == "user\taction\n"  # "nothing to do" for scripts: a header and no row


def test_a_failure_line_names_the_user_once() -> None:
    step = Step("1", "app", Action.SKIP, None, "tag rotator:exclude='yes': must be true or false", problem=True)
    failure = Failure(step, UserError("app", "tag rotator:exclude='yes': must be true or false"))
    assert failure.message.startswith("app: ")  # the error itself, for the log
    assert failure.reason("app") == "tag rotator:exclude='yes': must be true or false"
    assert Failure(None, AwsError("app: AccessDenied")).reason("app") == "AccessDenied"
    assert Failure(None, AwsError("AccessDenied for app")).reason("app") == "AccessDenied for app"


def test_the_events_and_results_operators_meet_are_documented() -> None:
    table = OPERATIONS[OPERATIONS.index("| event | meaning |") :]
    for event in ("leader.changed", "lease.error", "sweep.crashed", "sweep.skipped"):
        assert f"| `{event}` |" in table, event
    for result in ("success", "partial", "failure", "interrupted"):
        assert f"`{result}`" in OPERATIONS[OPERATIONS.index("`rotator_sweeps_total{result}` and") :], result
    # The events the code logs by these names exist (a renamed event would leave the docs behind).
    source = "\n".join(p.read_text("utf-8") for p in (ROOT / "rotator").rglob("*.py"))
    for event in ("leader.changed", "lease.error", "sweep.crashed", "sweep.skipped"):
        assert f'"{event}"' in source, event


def test_the_config_example_is_a_valid_configuration() -> None:
    """The role names changed in config/rotator.yaml: it still loads (its comments are documentation)."""
    data = yaml.safe_load((ROOT / "config" / "rotator.yaml").read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    load_settings(str(ROOT / "config" / "rotator.yaml"), env={})
