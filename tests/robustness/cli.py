"""Run the ``voxssl`` CLI in-process as a user would (exit code, stdout, stderr)."""

from __future__ import annotations


def run_cli(args: list[str], capsys) -> tuple[int, str, str]:
    from voxssl.cli import main

    try:
        main([str(a) for a in args])
        code = 0
    except SystemExit as exit_:
        code = int(exit_.code or 0)
    captured = capsys.readouterr()
    return code, captured.out, captured.err
