"""iam-key-rotator: keeps AWS IAM access keys young.

The package is arranged so that one pure function decides (``policy``) and a separate layer acts
(``executor``) through one AWS boundary (``aws``). ``app`` is the composition root.
"""

__version__ = "0.1.0"
