"""The operator docs stay true to the code: alert runbook anchors, CLI invocations and relative links.

* every ``runbook_url`` in ``deploy/prometheus/alerts.yml`` points at a heading of ``docs/operations.md``
  (GitHub-style anchor slugs);
* every ``rotator <command>`` written in ``docs/operations.md`` and ``README.md`` (when present) names a real
  subcommand of :func:`rotator.cli.build_parser`, and every ``--flag`` given to it exists for that subcommand;
* every relative link in ``docs/*.md`` points at a file that exists (and, for Markdown targets, at a heading that
  exists).
"""

from __future__ import annotations

import argparse
import re
import shlex
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from rotator.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]
OPERATIONS = ROOT / "docs" / "operations.md"
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
CLI_DOCS = [path for path in (OPERATIONS, ROOT / "README.md") if path.exists()]
DOC_FILES = sorted((ROOT / "docs").glob("*.md"))

# Fenced code blocks whose contents are shell commands; other languages (python, json, yaml, ini) are not scanned.
SHELL_FENCES = {"", "sh", "bash", "shell", "console", "shell-session", "zsh"}
FENCE = re.compile(r"^\s*(```+|~~~+)\s*([\w+-]*)")
INLINE_CODE = re.compile(r"(`+)(.+?)\1")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
# [text](target) and [text](target "title"); images too. Reference definitions: [label]: target
INLINE_LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE_LINK = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s|$)")
SHELL_OPERATORS = {"|", "||", "&&", ";", "&", "(", ")", "$(", "`"}
# Commands that only prefix another command.
WRAPPERS = {"sudo", "exec", "env", "time", "nohup", "command", "$", "#", ">"}
# Commands that run another command somewhere after their own options (a container, a transient unit).
RUNNERS = {"docker", "podman", "nerdctl", "kubectl", "systemd-run"}
ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
PLACEHOLDER = re.compile(r"^(<[^>]+>|[A-Z][A-Z_]*(\.\.\.)?)$")


# -- Markdown helpers ---------------------------------------------------------------------------------


def github_slug(text: str) -> str:
    """The anchor GitHub generates for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", text)  # a link shows its text
    text = text.replace("`", "")
    text = re.sub(r"<[^>]+>", "", text)  # inline HTML
    text = text.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def prose_and_code(markdown: str) -> tuple[list[str], list[tuple[str, str]]]:
    """Split Markdown into prose lines and fenced code blocks (info string, body)."""
    prose: list[str] = []
    blocks: list[tuple[str, str]] = []
    fence: str | None = None
    info = ""
    body: list[str] = []
    for line in markdown.splitlines():
        match = FENCE.match(line)
        if fence is None and match:
            fence, info, body = match.group(1), match.group(2).lower(), []
        elif fence is not None and line.strip().startswith(fence[0] * len(fence)) and not line.strip().strip(fence[0]):
            blocks.append((info, "\n".join(body)))
            fence = None
        elif fence is not None:
            body.append(line)
        else:
            prose.append(line)
    return prose, blocks


def heading_slugs(markdown: str) -> set[str]:
    """Every anchor of the document's headings, numbered like GitHub's for duplicates (``x``, ``x-1``, ...)."""
    prose, _ = prose_and_code(markdown)
    seen: dict[str, int] = {}
    slugs: set[str] = set()
    for line in prose:
        match = HEADING.match(line)
        if not match:
            continue
        slug = github_slug(match.group(2))
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        slugs.add(slug if count == 0 else f"{slug}-{count}")
    return slugs


def links(markdown: str) -> list[str]:
    """Link targets outside code (code spans and fenced blocks are not links)."""
    prose, _ = prose_and_code(markdown)
    targets: list[str] = []
    for line in prose:
        without_code = INLINE_CODE.sub("", line)
        targets.extend(INLINE_LINK.findall(without_code))
        reference = REFERENCE_LINK.match(without_code)
        if reference:
            targets.append(reference.group(1))
    return targets


def is_external(target: str) -> bool:
    return bool(re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:", target)) or target.startswith("//")


# -- rotator invocations ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Invocation:
    source: str
    text: str
    argv: tuple[str, ...]  # the words after ``rotator``


def shell_lines(markdown: str) -> Iterator[str]:
    """Command lines worth checking: shell code blocks (continuations joined) and inline code spans."""
    prose, blocks = prose_and_code(markdown)
    for info, body in blocks:
        if info not in SHELL_FENCES:
            continue
        yield from re.sub(r"\\\n", " ", body).splitlines()
    # A code span may wrap onto the next line of a paragraph: join each paragraph first.
    paragraph: list[str] = []
    for line in [*prose, ""]:
        if line.strip():
            paragraph.append(line.strip())
            continue
        for match in INLINE_CODE.finditer(" ".join(paragraph)):
            yield match.group(2).strip()
        paragraph = []


def tokenize(line: str) -> list[str]:
    try:
        lexer = shlex.shlex(line, posix=True, punctuation_chars="|&;()")
        lexer.whitespace_split = True
        lexer.commenters = "#"
        return list(lexer)
    except ValueError:  # an unbalanced quote in prose-like code: fall back to plain words
        return line.split()


def simple_commands(tokens: list[str]) -> Iterator[list[str]]:
    command: list[str] = []
    for token in tokens:
        if token in SHELL_OPERATORS or set(token) <= set("|&;()"):
            if command:
                yield command
            command = []
        else:
            command.append(token)
    if command:
        yield command


def is_rotator(token: str) -> bool:
    return token == "rotator" or token.endswith("/rotator")


def looks_like_start(token: str) -> bool:
    """The word after ``rotator`` starts a command line: a subcommand-like word or a global option."""
    return bool(re.match(r"^[a-z][a-z-]*$", token)) or token.startswith("--") or token == "-h"


def find_invocation(command: list[str]) -> tuple[str, ...] | None:
    """The arguments of ``rotator`` in one simple command, or None when it does not run rotator."""
    index = 0
    while index < len(command) and (command[index] in WRAPPERS or ASSIGNMENT.match(command[index])):
        index += 1
    words = command[index:]
    if not words:
        return None
    if is_rotator(words[0]):
        return tuple(words[1:])
    if words[0] in RUNNERS:
        # e.g. ``docker exec iam-key-rotator rotator plan``: the first rotator word that starts a command line.
        for position in range(1, len(words)):
            following = words[position + 1] if position + 1 < len(words) else None
            if (
                is_rotator(words[position])
                and following is not None
                and not is_rotator(following)
                and looks_like_start(following)
            ):
                return tuple(words[position + 1 :])
    return None


def invocations(markdown: str, source: str) -> list[Invocation]:
    found: list[Invocation] = []
    for line in shell_lines(markdown):
        for command in simple_commands(tokenize(line)):
            argv = find_invocation(command)
            if argv:  # a bare ``rotator`` is the program's name, not a command line
                found.append(Invocation(source, line, tuple(word.strip("[]") for word in argv)))
    return found


def _options(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {option: action for action in parser._actions for option in action.option_strings}


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    raise AssertionError("rotator's parser has no subcommands")


def check_invocation(argv: tuple[str, ...], parser: argparse.ArgumentParser) -> list[str]:
    """Problems with ``rotator <argv>``: unknown subcommand, options the subcommand does not have."""
    problems: list[str] = []
    global_options = _options(parser)
    subcommands = _subcommands(parser)
    words = list(argv)
    # Global options before the subcommand.
    while words and words[0].startswith("-"):
        name, _, inline_value = words.pop(0).partition("=")
        action = global_options.get(name)
        if action is None:
            problems.append(f"unknown global option {name}")
            continue
        if action.nargs != 0 and not inline_value and words:
            words.pop(0)
    if not words:
        if not ({"--version", "-h", "--help"} & set(argv)):
            problems.append("no subcommand")
        return problems
    command, rest = words[0], words[1:]
    if PLACEHOLDER.match(command):
        return problems  # a synopsis such as ``rotator [--config PATH] COMMAND``
    if command not in subcommands:
        return [*problems, f"unknown subcommand {command!r} (known: {', '.join(sorted(subcommands))})"]
    options = _options(subcommands[command])
    for word in rest:
        if word == "--":
            break
        if word.startswith("-") and len(word) > 1 and not re.match(r"^-\d", word):
            name = word.partition("=")[0]
            if name not in options:
                problems.append(f"{command}: unknown option {name} (known: {', '.join(sorted(options))})")
    return problems


# -- the tests ----------------------------------------------------------------------------------------


def test_operations_doc_exists() -> None:
    assert OPERATIONS.is_file(), "docs/operations.md is missing"


def _runbook_urls() -> list[tuple[str, str]]:
    rules = yaml.safe_load(ALERTS.read_text())
    urls = []
    for group in rules["groups"]:
        for rule in group["rules"]:
            url = (rule.get("annotations") or {}).get("runbook_url")
            if "alert" in rule and url:
                urls.append((rule["alert"], url))
    return urls


def test_every_alert_runbook_anchor_is_a_heading_of_the_operations_doc() -> None:
    urls = _runbook_urls()
    assert urls, "no runbook_url found in deploy/prometheus/alerts.yml"
    slugs = heading_slugs(OPERATIONS.read_text())
    problems = []
    for alert, url in urls:
        path, _, anchor = url.partition("#")
        if path != "docs/operations.md":
            problems.append(f"{alert}: runbook_url {url!r} does not point at docs/operations.md")
        elif not anchor:
            problems.append(f"{alert}: runbook_url {url!r} has no #anchor")
        elif anchor not in slugs:
            problems.append(f"{alert}: no heading in docs/operations.md has the anchor #{anchor}")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("doc", CLI_DOCS, ids=[path.name for path in CLI_DOCS])
def test_every_rotator_command_in_the_docs_exists(doc: Path) -> None:
    parser = build_parser()
    found = invocations(doc.read_text(), doc.name)
    if doc == OPERATIONS:
        # The operations doc must exercise the runbook's commands; an empty scan means the scanner broke.
        assert {inv.argv[0] for inv in found if inv.argv} >= {"rotate", "plan", "sweep", "inventory", "check-config"}
    problems = [
        f"{inv.source}: `{inv.text}`: {problem}" for inv in found for problem in check_invocation(inv.argv, parser)
    ]
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("doc", DOC_FILES, ids=[path.name for path in DOC_FILES])
def test_relative_links_in_docs_resolve(doc: Path) -> None:
    problems = []
    for target in links(doc.read_text()):
        if is_external(target):
            continue
        path_part, _, anchor = target.partition("#")
        resolved = (doc.parent / path_part).resolve() if path_part else doc
        if not resolved.exists():
            problems.append(f"{doc.name}: link {target!r}: {resolved} does not exist")
            continue
        if anchor and resolved.suffix == ".md" and anchor not in heading_slugs(resolved.read_text()):
            problems.append(f"{doc.name}: link {target!r}: no heading with anchor #{anchor} in {resolved.name}")
    assert not problems, "\n".join(problems)


# -- the checkers themselves (so that a broken scanner cannot pass silently) --------------------------


@pytest.mark.parametrize(
    ("heading", "slug"),
    [
        ("RotatorDown", "rotatordown"),
        ("Leaked key: rotate with --revoke", "leaked-key-rotate-with---revoke"),
        (
            "Python: re-read AWSCURRENT on an authentication failure",
            "python-re-read-awscurrent-on-an-authentication-failure",
        ),
        ("Metrics, logs and health endpoints", "metrics-logs-and-health-endpoints"),
        ("The `credential_process` line", "the-credential_process-line"),
        ("I1\N{EN DASH}I8 (why)", "i1i8-why"),
    ],
)
def test_github_slug(heading: str, slug: str) -> None:
    assert github_slug(heading) == slug


def test_duplicate_headings_are_numbered_and_code_is_not_a_heading() -> None:
    text = "# Setup\n## Setup\n```sh\n# not a heading\n```\n"
    assert heading_slugs(text) == {"setup", "setup-1"}


def test_invocations_are_found_in_code_and_only_there() -> None:
    text = "\n".join(
        [
            "Run `rotator plan --json` first; prose that says rotator frobnicate is not code.",
            "```sh",
            "sudo rotator --config /etc/rotator/config.yaml rotate app \\",
            "  --revoke   # compromise",
            "docker exec iam-key-rotator rotator inventory | jq .",
            "docker exec rotator rotator sweep --dry-run",
            "ROTATOR_SAFETY__DRY_RUN=false /usr/local/bin/rotator check-config",
            "journalctl -u rotator -f && systemctl stop rotator",
            "```",
            "```python",
            "rotator bogus",
            "```",
        ]
    )
    assert [inv.argv for inv in invocations(text, "t")] == [
        ("--config", "/etc/rotator/config.yaml", "rotate", "app", "--revoke"),
        ("inventory",),
        ("sweep", "--dry-run"),
        ("check-config",),
        ("plan", "--json"),
    ]


@pytest.mark.parametrize(
    ("argv", "problem"),
    [
        (("rotate", "app", "--revoke"), None),
        (("--config", "x.yaml", "--log-level", "debug", "sweep", "--dry-run"), None),
        (("--version",), None),
        (("sandbox", "--duration", "30", "--phase=5"), None),
        (("rotat", "app"), "unknown subcommand 'rotat'"),
        (("plan", "--dry-run"), "plan: unknown option --dry-run"),
        (("rotate", "app", "--force"), "rotate: unknown option --force"),
        (("--verbose", "plan"), "unknown global option --verbose"),
    ],
)
def test_check_invocation(argv: tuple[str, ...], problem: str | None) -> None:
    problems = check_invocation(argv, build_parser())
    if problem is None:
        assert problems == []
    else:
        assert any(problem in found for found in problems), problems
