"""Benchmark of ``rotator credential-process``: start-up, as SDKs pay it on every credential refresh.

Wall time of the whole process (exec to exit, output read), median of N runs, against its own moto server
(``tests/helpers.py``'s ``MotoServer``) holding one rotator secret. The commands run interleaved, one run of
each per round, so that a busy machine slows them alike. Printed beside two baselines from the same run:

- ``python -c "import boto3"``: the floor for anything that talks to AWS in Python;
- the old way: ``python -c`` doing a boto3 ``get_secret_value`` and printing the credential_process JSON
  (without ``Expiration``), i.e. what ``aws secretsmanager get-secret-value`` does minus the AWS CLI itself.

and the ways of starting the command: the installed ``rotator`` console script, ``python -m rotator`` (what
the console script runs), ``python -m rotator.cli`` (imports the full CLI - configuration, logging - first).

Usage: ``python benchmarks/credential_process.py [--runs 21]``
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

from _support import MotoServer, aws_env, client

SECRET_ID = "iam-keys/app"  # noqa: S105 - a secret's name, and a fake one
DOCUMENT = {
    "Version": 1,
    "AccessKeyId": "AKIAIOSFODNN7EXAMPLE",
    "SecretAccessKey": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
    "UserName": "app",
    "CreateDate": "2024-05-01T03:00:12+00:00",
}
OLD_WAY = f"""\
import boto3, json
value = boto3.client("secretsmanager").get_secret_value(SecretId={SECRET_ID!r}, VersionStage="AWSCURRENT")
document = json.loads(value["SecretString"])
print(json.dumps({{k: document[k] for k in ("Version", "AccessKeyId", "SecretAccessKey")}}))
"""


def commands() -> dict[str, list[str]]:
    python = sys.executable
    args = ["credential-process", "--secret-id", SECRET_ID]
    found = {
        'baseline: python -c "import boto3"': [python, "-c", "import boto3"],
        "baseline: old way, boto3 get_secret_value": [python, "-c", OLD_WAY],
        "rotator credential-process (console script)": [str(Path(python).parent / "rotator"), *args],
        "python -m rotator credential-process": [python, "-m", "rotator", *args],
        "python -m rotator.cli credential-process": [python, "-m", "rotator.cli", *args],
    }
    script = Path(found["rotator credential-process (console script)"][0])
    if not script.exists():
        del found["rotator credential-process (console script)"]
    elif "rotator.cli" in script.read_text():  # installed before the entry point moved to rotator.__main__
        found["rotator credential-process (console script -> rotator.cli)"] = found.pop(
            "rotator credential-process (console script)"
        )
    return found


def run_once(argv: list[str], env: dict[str, str]) -> tuple[float, str]:
    started = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{argv[:3]}... failed ({done.returncode}): {done.stderr.strip()[-500:]}")
    return elapsed, done.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=21, help="runs of each command (median reported)")
    options = parser.parse_args()

    server = MotoServer()
    try:
        client(server.url, "secretsmanager").create_secret(Name=SECRET_ID, SecretString=json.dumps(DOCUMENT))
        env = aws_env(server.url)
        todo = commands()
        for argv in todo.values():  # warm the page cache and the byte-code caches; check the output once
            _, out = run_once(argv, env)
            if "credential-process" in argv:
                assert set(json.loads(out)) == {"Version", "AccessKeyId", "SecretAccessKey", "Expiration"}, out
        times: dict[str, list[float]] = {name: [] for name in todo}
        for _ in range(options.runs):
            for name, argv in todo.items():
                times[name].append(run_once(argv, env)[0])
    finally:
        server.stop()

    floor = statistics.median(times['baseline: python -c "import boto3"'])
    print(f"start-up, wall time of the whole process: median of {options.runs} runs (interleaved), moto server")
    print(f"{'command':60} {'median':>9} {'min':>9} {'vs import boto3':>16}")
    for name, samples in times.items():
        median = statistics.median(samples)
        print(f"{name:60} {median * 1000:7.0f}ms {min(samples) * 1000:7.0f}ms {(median - floor) * 1000:+14.0f}ms")


if __name__ == "__main__":
    main()
