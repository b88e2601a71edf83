"""The `vsr` command's entry point (`python -m vsr`, and the `vsr` script: pyproject's [project.scripts]).

`main()` makes a stop signal that arrives while the command line interface is still being imported (typer, rich:
the first ~0.2 s) end vsr with one line and the shell's exit status, before anything is opened or written
(`vsr.signals.install_early`); `vsr.cli.main` then takes over with the handlers that clean up. Once the command
has ended, its outcome (exit status, the line it printed) stands: a signal that arrives while the interpreter shuts
down is ignored rather than turned into a KeyboardInterrupt traceback.
"""

from vsr.signals import install_early, settle


def main() -> None:
    install_early()
    from vsr.cli import main as cli_main

    try:
        cli_main()
    finally:
        settle()


if __name__ == "__main__":
    main()
