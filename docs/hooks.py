"""mkdocs hooks of the documentation site (mkdocs.yml `hooks:`); not a page.

1. Code by name. In a page, `{{ code("p3o_continuous.py", "cycle_reset") }}` becomes that function's source as a code
   block titled with the file and the lines it comes from; `{{ ref("p3o_continuous.py", "cycle_reset") }}` becomes an
   inline reference naming them. Names are found with Python's `ast`: a function or class (`InnerDistillation`), a
   method (`InnerDistillation.__call__`), a field of a class (`Args.reset_adam`, with the docstring below it) or a
   module-level assignment (`KEEP_ADAM`). `section="SBP"` takes, inside a function, the block that opens with the
   file's own comment `# ---- SBP...` and runs to the next such comment or the end of the enclosing block. A name,
   file or section that does not exist stops the build, so a page cannot go on showing code the file no longer has.
2. Results. results/README.md (the results page) and every PNG under results/ join the site at their repository paths,
   so pages show the committed figures and `mkdocs build --strict` fails on a missing one; the results page's links
   into docs/ are mapped onto the site, and it ends with every table (included from its file) and figure of results/,
   folder by folder.
"""

import ast
import re
import textwrap
from pathlib import Path

from mkdocs.exceptions import PluginError
from mkdocs.structure.files import File

ROOT = Path(__file__).resolve().parent.parent
RESULTS = "results"
ARGS = r'\(\s*"(?P<file>[^"]+)"\s*,\s*"(?P<name>[^"]+)"\s*(?:,\s*section\s*=\s*"(?P<section>[^"]+)"\s*)?\)'
CODE = re.compile(r"^(?P<indent>[ \t]*)\{\{\s*code" + ARGS + r"\s*\}\}[ \t]*$", re.M)  # alone on its line
LONG = 25  # lines: a longer code block comes folded
REF = re.compile(r"\{\{\s*ref" + ARGS + r"\s*\}\}")  # anywhere in a line


def _node_span(node, body, index):
    """First and last line of a statement; a class field or assignment takes the docstring right below it."""
    first = min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])])
    last = node.end_lineno
    following = body[index + 1] if index + 1 < len(body) else None
    if (isinstance(node, (ast.AnnAssign, ast.Assign)) and isinstance(following, ast.Expr)
            and isinstance(following.value, ast.Constant) and isinstance(following.value.value, str)):
        last = following.end_lineno
    return first, last


def _names(node):
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return [node.name]
    if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
        return [node.target.id]
    if isinstance(node, ast.Assign):
        return [t.id for t in node.targets if isinstance(t, ast.Name)]
    return []


def locate(filename, name, section=None):
    """(first line, last line, source lines) of `name` in `filename` (a path from the repository root).
    Raises PluginError when the file, the name or the section does not exist."""
    path = ROOT / filename
    if not path.is_file() or path.suffix != ".py":
        raise PluginError(f"docs: no Python file {filename!r} in the repository")
    lines = path.read_text().splitlines()
    body, node = ast.parse("\n".join(lines)).body, None
    for part in name.split("."):
        for index, candidate in enumerate(body):
            if part in _names(candidate):
                node, span = candidate, _node_span(candidate, body, index)
                break
        else:
            raise PluginError(f"docs: {filename} has no {name!r} (no {part!r} where it was looked for)")
        body = getattr(node, "body", [])
    first, last = span
    if section is not None:
        marker = re.compile(r"\s*# ----")
        starts = [i for i in range(first, last + 1)
                  if marker.match(lines[i - 1]) and lines[i - 1].strip()[len("# ----"):].strip().startswith(section)]
        if len(starts) != 1:
            raise PluginError(f"docs: {filename} {name} has {len(starts)} comments '# ---- {section}...', not one")
        first = starts[0]
        indent = len(lines[first - 1]) - len(lines[first - 1].lstrip())
        end = first + 1
        while end <= last and not (lines[end - 1].strip() and (  # to the next such comment, or out of the block
                len(lines[end - 1]) - len(lines[end - 1].lstrip()) < indent
                or marker.match(lines[end - 1]) and len(lines[end - 1]) - len(lines[end - 1].lstrip()) == indent)):
            end += 1
        last = end - 1
        while not lines[last - 1].strip():
            last -= 1
    return first, last, lines[first - 1:last]


def lines_of(first, last):
    return f"line {first}" if first == last else f"lines {first}–{last}"


def label(match):
    return f"{match['name']}, section '{match['section']}'" if match["section"] else match["name"]


def render_code(match):
    """A code block titled with the file, the lines and the name; one longer than LONG lines comes folded, its title
    showing, so that a detail's text is not lost between long listings."""
    first, last, source = locate(match["file"], match["name"], match["section"])
    title = f"{match['file']}, {lines_of(first, last)}: {label(match)}"
    code = textwrap.dedent("\n".join(source)).splitlines()
    if len(code) <= LONG:
        block = [f'```python title="{title}" linenums="{first}"', *code, "```"]
    else:
        shown = title.replace("_", "\\_")  # a folded block's title is read as Markdown: __call__ is no emphasis
        block = [f'??? example "{shown} ({len(code)} lines: open to read)"', "",
                 f'    ```python linenums="{first}"', *["    " + line if line else line for line in code], "    ```"]
    return "\n".join(match["indent"] + line if line else line for line in block)


def render_ref(match):
    first, last, _ = locate(match["file"], match["name"], match["section"])
    return f"`{label(match)}` (`{match['file']}`, {lines_of(first, last)})"


def expand(markdown):
    """Replace every code/ref directive in `markdown`; an unreadable directive is an error too."""
    markdown = REF.sub(render_ref, CODE.sub(render_code, markdown))
    left = re.search(r"\{\{\s*(code|ref)\(.*", markdown)
    if left:
        raise PluginError(f"docs: cannot read the directive {left.group(0)!r}")
    return markdown


def github_lists(markdown):
    """Lists as GitHub reads them, for Python-Markdown: a blank line before a list that follows a paragraph, and nested
    items indented 4 spaces a level (GitHub nests at 2). The guides and results/README.md are read on GitHub too."""
    out, fence, stack, prev = [], False, [], ""
    for line in markdown.split("\n"):
        item = None if fence else re.match(r"^( *)([-*+]|\d+[.)]) ", line)
        if line.lstrip().startswith("```"):
            fence = not fence
        elif item:
            indent = len(item[1])
            if not stack:
                if prev.strip():
                    out.append("")
                stack = [indent]
            while len(stack) > 1 and indent < stack[-1]:
                stack.pop()
            if indent > stack[-1]:
                stack.append(indent)
            line = " " * 4 * (len(stack) - 1) + line[indent:]
        elif line.strip() and not line.startswith(" ") and not prev.strip():
            stack = []  # a paragraph after a blank line ends the list
        out.append(line)
        prev = line
    return "\n".join(out)


def results_files():
    """Every figure and table under results/, as paths from the repository root, sorted."""
    return sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / RESULTS).rglob("*") if p.suffix in (".png", ".md"))


def gallery(page_src):
    """The results page's last section: every table and figure of results/, one collapsible block per folder."""
    here = Path(page_src).parent
    folders = {}
    for path in results_files():
        if path != f"{RESULTS}/README.md":
            folders.setdefault(str(Path(path).parent), []).append(path)
    out = ["", "## Every table and figure in results/", "",
           "Each folder of `results/`, as `reproduce.py` and `benchmark.py` wrote it: its tables, then its figures. "
           "Open a folder to read them.", ""]
    for folder, paths in sorted(folders.items()):
        tables = [p for p in paths if p.endswith(".md")]
        figures = [p for p in paths if p.endswith(".png")]
        counts = ", ".join(f"{len(x)} {word}{'s' if len(x) != 1 else ''}"
                           for x, word in ((tables, "table"), (figures, "figure")) if x)
        out += [f'??? note "`{folder}/`: {counts}"', ""]
        for table in tables:
            out += [f"    **`{table}`**", ""]
            text = (ROOT / table).read_text()
            text = re.sub(r"^#+ *(.*)$", r"*\1*", text, flags=re.M)  # its headings as text: not in the page's contents
            text = github_lists(text)
            out += ["    " + line if line else line for line in text.splitlines()] + [""]
        for figure in figures:
            link = Path(figure).relative_to(here).as_posix()
            out += [f"    ![{figure}]({link}){{ loading=lazy }}", "", f"    `{figure}`", ""]
    return "\n".join(out) + "\n"


# ---- mkdocs events ----
def on_files(files, config):
    for path in [p for p in results_files() if p.endswith(".png")] + [f"{RESULTS}/README.md"]:
        files.append(File(path, str(ROOT), config["site_dir"], config["use_directory_urls"]))
    return files


def on_page_markdown(markdown, page, config, files):
    markdown = expand(github_lists(markdown))
    if page.file.src_uri == f"{RESULTS}/README.md":
        # written for the repository, where docs/ is a folder beside results/; on the site docs/ is the root
        markdown = markdown.replace("](../docs/", "](../") + gallery(page.file.src_uri)
    return markdown
