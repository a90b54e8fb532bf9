"""Replace one tool's own section of a shared markdown file (benchmark scripts and their README)."""

from __future__ import annotations

from pathlib import Path

from voxssl.utils.atomic import atomic_write_text


def section_markers(name: str) -> tuple[str, str]:
    return f"<!-- {name}:start -->", f"<!-- {name}:end -->"


def replace_section(path: Path, name: str, body: str, title: str = "# Benchmarks\n") -> None:
    """Write ``body`` between the ``name`` markers of ``path`` (appended when absent), atomically.

    ``body`` excludes the markers; the rest of the file is kept byte for byte.
    """
    start, end = section_markers(name)
    section = f"{start}\n{body.strip(chr(10))}\n\n{end}\n"
    text = path.read_text(encoding="utf-8") if path.is_file() else title
    if start in text and end in text:
        before, rest = text.split(start, 1)
        after = rest.split(end, 1)[1].lstrip("\n")
        text = before + section + ("\n" + after if after else "")
    else:
        text = text.rstrip("\n") + "\n\n" + section
    atomic_write_text(path, text)


__all__ = ["replace_section", "section_markers"]
