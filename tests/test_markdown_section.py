"""Benchmark scripts replace their own README section and nothing else."""

from voxssl.utils.markdown_section import replace_section


def test_replace_section_appends_then_replaces_in_place(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("# Benchmarks\n\nintro\n", encoding="utf-8")
    replace_section(readme, "a", "## A\n\nfirst")
    replace_section(readme, "b", "## B\n\nother")
    replace_section(readme, "a", "## A\n\nsecond\n")
    text = readme.read_text(encoding="utf-8")
    assert text == (
        "# Benchmarks\n\nintro\n\n<!-- a:start -->\n## A\n\nsecond\n\n<!-- a:end -->\n\n"
        "<!-- b:start -->\n## B\n\nother\n\n<!-- b:end -->\n"
    )
    assert "first" not in text


def test_replace_section_creates_the_file(tmp_path):
    readme = tmp_path / "new.md"
    replace_section(readme, "x", "body")
    assert (
        readme.read_text(encoding="utf-8")
        == "# Benchmarks\n\n<!-- x:start -->\nbody\n\n<!-- x:end -->\n"
    )
