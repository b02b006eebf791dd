"""The ``rotator`` command (console script and ``python -m rotator``).

``credential-process`` goes straight to :mod:`rotator.credential_process`: SDKs start it on every credential
refresh, and importing :mod:`rotator.cli` first (the configuration's pydantic models, structlog, YAML) would
cost it more than its own work. Every other command goes to :func:`rotator.cli.main`.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from rotator import credential_process


def main(argv: Sequence[str] | None = None) -> int:
    words = sys.argv[1:] if argv is None else list(argv)
    fast = credential_process.command_args(words)
    if fast is not None:
        return credential_process.main(fast)
    from rotator.cli import main as cli  # noqa: PLC0415 - not for credential-process (see above)

    return cli(words)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
