"""Error types of vsr.

Contract: every error a user can cause is raised as a `VsrError` (or subclass) whose
message is one line that says what is wrong and how to fix it. The CLI prints that
line on stderr and exits with `exit_code`; nothing else in vsr prints tracebacks.
"""

from __future__ import annotations


class VsrError(Exception):
    """A user-facing error: one actionable line, mapped to an exit code by the CLI."""

    exit_code = 1


class InputError(VsrError):
    """The input (file, folder, dataset, stream) is missing, unreadable or unsupported."""

    exit_code = 2


class OutputError(VsrError):
    """The output cannot be written (exists without --overwrite, same as input, unwritable)."""

    exit_code = 3


class WeightsError(VsrError):
    """A weights file is missing, corrupt or does not fit the request."""

    exit_code = 4


class UsageError(VsrError):
    """An option value is out of range or options contradict each other."""

    exit_code = 2


class BackendError(VsrError):
    """A requested backend or device is not available on this machine."""

    exit_code = 5


DISTRIBUTION = "vsr-srcnn"  # vsr's name on PyPI and in pip (`vsr` there is another project); the command is vsr


def install_hint(extra: str) -> str:
    """`pip install '<what the extra adds>'`, read from this installation's metadata (so it matches pyproject.toml's
    [project.optional-dependencies]), e.g. `pip install 'ray>=2.10'`; the extra itself where there is no metadata."""
    from importlib.metadata import PackageNotFoundError, requires

    try:
        specs = [r.split(";")[0].strip() for r in requires(DISTRIBUTION) or [] if f'extra == "{extra}"' in r]
    except PackageNotFoundError:
        specs = []
    return "pip install " + " ".join(f"'{s}'" for s in specs) if specs else f"pip install '{DISTRIBUTION}[{extra}]'"
