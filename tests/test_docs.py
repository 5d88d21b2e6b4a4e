"""The documentation site: `mkdocs build --strict` passes, and every piece of code a page includes from a training file
by name still exists (docs/hooks.py)."""

import ast
import os
import re
import subprocess
import sys

import pytest
import yaml
from conftest import ROOT

sys.path.insert(0, str(ROOT / "docs"))
import hooks  # noqa: E402  (docs/hooks.py, the site's mkdocs hooks)
from mkdocs.exceptions import PluginError  # noqa: E402

PAGES = {"ppo_continuous.py": "ppo", "p3o_continuous.py": "p3o", "ppo_cycle.py": "cycle", "ppo_redo.py": "redo",
         "ppo_cbp.py": "cbp", "sac_sbp.py": "sac_sbp"}


def build(config, site_dir):
    return subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", str(config),
                           "--site-dir", str(site_dir)], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "NO_MKDOCS_2_WARNING": "1"}, timeout=300)


def test_site_builds_strict_with_every_page_and_figure(tmp_path):
    proc = build(ROOT / "mkdocs.yml", tmp_path / "site")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    site = tmp_path / "site"
    for page in PAGES.values():
        assert (site / "algorithms" / page / "index.html").is_file()
    results_page = (site / "results" / "index.html").read_text()
    for path in hooks.results_files():  # every figure on the site, and every table and figure on the results page
        if path.endswith(".png"):
            assert (site / path).is_file(), path
            assert f'src="{path.removeprefix("results/")}"' in results_page, path
        elif path != "results/README.md":
            assert f"<code>{path}</code>" in results_page, path
    p3o = (site / "algorithms" / "p3o" / "index.html").read_text()
    assert "p3o_continuous.py, lines" in p3o and ">cycle_slice<" in p3o  # code included, titled with its lines


def test_a_broken_link_anchor_page_or_figure_fails_the_build(tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "index.md").write_text("# Home\n\n[a page](missing.md), [an anchor](#nowhere), ![a figure](missing.png)\n"
                                   "\n## Results\n\n[results](results/README.md)\n")
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    config.update(docs_dir=str(docs), hooks=[str(ROOT / "docs" / "hooks.py")], extra_css=[],
                  nav=[{"Home": "index.md"}, {"Results": "results/README.md"}, {"Gone": "gone.md"}])
    (tmp_path / "mkdocs.yml").write_text(yaml.safe_dump(config))
    proc = build(tmp_path / "mkdocs.yml", tmp_path / "site")
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    for missing in ("'missing.md'", "'#nowhere'", "'missing.png'", "'gone.md'"):
        assert missing in out, (missing, out)


def references():
    """Every code/ref directive in docs/, as (page, file, name, section)."""
    found = []
    for page in sorted((ROOT / "docs").rglob("*.md")):
        text = page.read_text()
        for pattern in (hooks.CODE, hooks.REF):
            found += [(page.relative_to(ROOT).as_posix(), m["file"], m["name"], m["section"])
                      for m in pattern.finditer(text)]
    return found


def test_every_code_reference_names_code_that_exists():
    refs = references()
    assert len(refs) > 50
    for page, filename, name, section in refs:
        first, last, source = hooks.locate(filename, name, section)
        assert 1 <= first <= last and len(source) == last - first + 1, (page, filename, name)
        if section is None:  # the lines found define that name
            last_part = re.escape(name.split(".")[-1])
            assert any(re.match(rf"\s*((async )?def|class) {last_part}\b|\s*{last_part}\s*[:=]", line)
                       for line in source), (page, name)
    pages = {page for page, *_ in refs}
    assert {f"docs/algorithms/{p}.md" for p in PAGES.values()} <= pages


@pytest.mark.parametrize("directive, message", [
    ('{{ code("p3o_continuous.py", "no_such_function") }}', "has no 'no_such_function'"),
    ('{{ code("p3o_continuous.py", "InnerDistillation.no_such_method") }}', "has no"),
    ('{{ ref("p3o_continuous.py", "Args.no_such_field") }}', "has no"),
    ('{{ code("no_such_file.py", "main") }}', "no Python file"),
    ('{{ code("p3o_continuous.py", "main", section="No such section") }}', "0 comments"),
    ('{{ code(p3o_continuous.py, main) }}', "cannot read the directive"),
])
def test_a_missing_name_file_or_section_stops_the_build(directive, message):
    with pytest.raises(PluginError, match=re.escape(message)):
        hooks.expand(f"Some text.\n\n{directive}\n")


def test_included_code_is_the_files_source_with_its_line_numbers():
    first, last, source = hooks.locate("p3o_continuous.py", "cycle_reset")
    lines = (ROOT / "p3o_continuous.py").read_text().splitlines()
    assert source == lines[first - 1:last] and source[0].startswith("def cycle_reset(")
    block = hooks.expand('1. A detail.\n\n    {{ code("p3o_continuous.py", "cycle_reset") }}\n')
    assert f'    ```python title="p3o_continuous.py, lines {first}–{last}: cycle_reset" linenums="{first}"' in block
    first, last, source = hooks.locate("p3o_continuous.py", "main", section="SBP")  # a block of main, by its comment
    assert source[0].strip().startswith("# ---- SBP") and not source[-1].strip().startswith("# ----")
    first, last, source = hooks.locate("p3o_continuous.py", "Args.reset_adam")  # a field and its docstring
    assert source[0].strip().startswith("reset_adam:") and source[-1].rstrip().endswith('"""')
    assert hooks.expand('{{ ref("p3o_continuous.py", "cycle_slice") }}') == \
        f"`cycle_slice` (`p3o_continuous.py`, lines {hooks.locate('p3o_continuous.py', 'cycle_slice')[0]}–" \
        f"{hooks.locate('p3o_continuous.py', 'cycle_slice')[1]})"


def test_each_training_file_opens_with_its_page_and_the_page_has_numbered_details():
    nav = yaml.safe_load((ROOT / "mkdocs.yml").read_text())["nav"]
    algorithms = next(entry["Algorithms"] for entry in nav if "Algorithms" in entry)
    in_nav = {path for entry in algorithms for path in entry.values()}
    for filename, page in PAGES.items():
        first_line = ast.get_docstring(ast.parse((ROOT / filename).read_text())).splitlines()[0]
        assert f"docs/algorithms/{page}.md" in first_line, filename
        assert f"algorithms/{page}.md" in in_nav
        text = (ROOT / "docs" / "algorithms" / f"{page}.md").read_text()
        for section in ("## Overview", "## Usage", "## Logged metrics", "## Implementation details",
                        "## Experiment results"):
            assert section in text, (page, section)
        details = text.split("## Implementation details")[1].split("\n## ")[0]
        numbered = re.findall(r"^(\d+)\. \*\*", details, flags=re.M)
        assert len(numbered) >= 4 and numbered == [str(i) for i in range(1, len(numbered) + 1)], page
        assert "{{ code(" in details, page
    assert not (ROOT / "docs" / "design.md").exists()


def test_github_style_lists_become_python_markdown_lists():
    text = "Where:\n- one\n  - nested\n- two\n\nAfter.\n```\n- not a list\n```\n"
    assert hooks.github_lists(text) == "Where:\n\n- one\n    - nested\n- two\n\nAfter.\n```\n- not a list\n```\n"


def test_the_readmes_relative_links_name_files_that_exist():
    for readme in ("README.md", "results/README.md"):
        text = (ROOT / readme).read_text()
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if not re.match(r"[a-z]+://|#", target):
                path = (ROOT / readme).parent / target.split("#")[0]
                assert path.exists(), (readme, target)
