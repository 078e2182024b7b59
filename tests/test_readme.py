"""The README's and the docs' promises that a test can keep: the README's Python examples are the
tested ones, the commands and options the README and docs/*.md name exist (each option in the
command it is written with), the repository paths and modules they name exist, and the quick
start says what the Makefile does."""

from __future__ import annotations

import functools
import re
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from vsearch.cli.main import app

REPO = Path(__file__).resolve().parent.parent
README = (REPO / "README.md").read_text(encoding="utf-8")
API_DOC = (REPO / "docs" / "api.md").read_text(encoding="utf-8")
DOCS = {p: p.read_text(encoding="utf-8") for p in sorted((REPO / "docs").glob("*.md"))}
TEXTS = {REPO / "README.md": README, **DOCS}
MAKEFILE = (REPO / "Makefile").read_text(encoding="utf-8")


def python_blocks(text: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.S | re.M)


# --- what the markdown holds in code --------------------------------------------------------

FENCE = re.compile(r"^```[^\n]*\n(.*?)^```[ \t]*$", flags=re.S | re.M)
OPTION = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")


def code_block_lines(text: str) -> list[str]:
    """Lines of fenced code blocks, and of indented (4-space) blocks outside them; a line ending
    in a backslash is joined with the next."""
    raw = [line for block in FENCE.findall(text) for line in block.splitlines()]
    previous, in_block = "", False
    for line in FENCE.sub("", text).splitlines():
        if line.startswith("    ") and (in_block or not previous.strip()):
            in_block = True
            raw.append(line.strip())
        elif line.strip():
            in_block = False
        previous = line
    lines: list[str] = []
    joining = False
    for line in raw:
        if joining:
            lines[-1] = lines[-1][:-1].rstrip() + " " + line.strip()
        else:
            lines.append(line)
        joining = lines[-1].rstrip().endswith("\\")
    return [line.removeprefix("$ ") for line in lines]


def inline_spans(text: str) -> list[tuple[str, str]]:
    """(span, the line it is on) for each inline code span outside fenced blocks."""
    spans = []
    for line in FENCE.sub("", text).splitlines():
        for span in re.findall(r"(?<!`)`([^`\n]+)`(?!`)", line):
            spans.append((span, line))
    return spans


@functools.cache
def command_options() -> dict[str, set[str]]:
    """Each command's options as its --help shows them (declared by the command and printed);
    "" holds the group's own (vsearch --version)."""
    group = typer.main.get_command(app)
    runner = CliRunner()
    found = {}
    for name, command in [("", group), *group.commands.items()]:
        help_text = runner.invoke(app, [name, "--help"] if name else ["--help"], terminal_width=200).stdout
        assert f"Usage: vsearch {name}".rstrip() in help_text, name
        declared = {o for p in command.params if not getattr(p, "hidden", False)
                    for o in (*p.opts, *p.secondary_opts) if o.startswith("--")} | {"--help"}
        found[name] = {o for o in declared if re.search(rf"(?<![\w-]){re.escape(o)}(?![\w-])", help_text)}
        assert "--help" in found[name] and len(found[name]) > 1, name
    return found


BENCHMARKS = {p.name: p.read_text(encoding="utf-8") for p in (REPO / "benchmarks").glob("*.py")}
# Another program's options are its own business; every other bare option must be vsearch's.
OTHER_PROGRAMS = {"pip", "pip3", "python", "python3", "ssh", "xargs", "ls", "head", "find", "git", "make",
                  "apt-get", "curl", "nice", "pytest", "ruff", "open_clip", "ray", "source"}
# Pipes, `&&`, `;`, redirections; a `|` before an option is an alternative (`--pairs F | --groups F`).
SEPARATORS = re.compile(r"\s(?:\|(?!\s*-)|&&|;|>)\s")


def split_comment(line: str) -> tuple[str, str]:
    """A code line and its shell comment (`# ...`), apart."""
    found = re.search(r"(?:^|\s)#(?:\s|$)", line)
    return (line[:found.start()], line[found.end():]) if found else (line, "")


def segments(code: str) -> list[str]:
    """Split a command line at pipes, `&&`, `;` and redirections, and again before each
    `vsearch COMMAND`, so an option belongs to the command written before it."""
    parts = []
    for piece in SEPARATORS.split(code):
        parts += re.split(r"(?=(?<![\w./-])vsearch\s+[a-z-])", piece)
    return [p.strip() for p in parts if p.strip()]


def attribute(segment: str, commands: set[str], context: str | None) -> tuple[str, str | None]:
    """Whose options a piece of code names: ("vsearch", COMMAND) ("" for the group itself),
    ("bench", SCRIPT), ("other", None) for another program, else ("vsearch", context) when the
    line is about one command, or ("any", None): an option of some vsearch command."""
    words = segment.split()
    if words[0] == "vsearch":
        if len(words) > 1 and words[1] in commands:
            return "vsearch", words[1]
        return "vsearch", ""
    if words[0] in commands and len(words) > 1:
        return "vsearch", words[0]
    scripts = [w for w in words[:3] if Path(w).name in BENCHMARKS]
    if scripts:
        return "bench", Path(scripts[0]).name
    if Path(words[0]).name in OTHER_PROGRAMS:
        return "other", None
    return ("vsearch", context) if context else ("any", None)


def option_claims() -> list[tuple[str, str, str, str | None, str]]:
    """(doc, option, kind, owner, the code it was in) for every --option in the README's and the
    docs' code: in code blocks, in inline spans, and in README table rows about a command.
    Options in a comment need only be some command's: a comment may name another command's."""
    commands = set(command_options()) - {""}
    claims = []
    for path, text in TEXTS.items():
        doc = path.relative_to(REPO).as_posix()
        pieces = [(line, None) for line in code_block_lines(text)]
        for span, line in inline_spans(text):
            row = re.match(r"^\| `vsearch ([a-z-]+)", line)
            pieces.append((span, row.group(1) if row and row.group(1) in commands else None))
        for piece, context in pieces:
            code, comment = split_comment(piece)
            for seg in segments(code):
                kind, owner = attribute(seg, commands, context)
                claims += [(doc, o, kind, owner, piece) for o in OPTION.findall(seg)]
            claims += [(doc, o, "any", None, piece) for o in OPTION.findall(comment)]
    return claims


# --- the README -----------------------------------------------------------------------------

def test_every_readme_python_example_is_one_that_test_api_runs():
    readme, tested = python_blocks(README), python_blocks(API_DOC)
    assert readme, "the README shows the Python API"
    for block in readme:
        assert block in tested, f"README example not in docs/api.md (so not run by test_api):\n{block}"


def test_every_command_and_option_in_the_readme_exists():
    runner = CliRunner()
    commands = set(re.findall(r"^\| `vsearch ([a-z-]+)", README, flags=re.M))
    assert {"embed", "build-index", "query", "duplicates", "evaluate", "make-pairs", "info"} <= commands
    assert commands == set(command_options()) - {""}, "the README's command table lists every command, and only those"
    helps = {c: runner.invoke(app, [c, "--help"], terminal_width=200).stdout for c in commands}
    for command, text in helps.items():
        assert "Usage:" in text, command
    every_help = "\n".join(helps.values())
    for option in set(re.findall(r"`(--[a-z][a-z-]+)", README)):
        assert option in every_help, f"{option} is in the README but in no command's help"


def test_readme_points_at_no_file_users_do_not_have():
    assert "../shared" not in README
    for target in re.findall(r"\]\(([^)#]+)\)", README):
        assert (REPO / target).exists(), target


def test_readme_is_short():
    words = len(README.split())
    assert words <= 1500, f"README.md has {words} words; details belong in docs/"


def test_readme_lists_every_doc_and_both_screenshots():
    links = set(re.findall(r"\]\((docs/[^)#]+)\)", README))
    for path in DOCS:
        assert f"docs/{path.name}" in links, f"docs/{path.name} is not in the README's list of docs"
    assert {"docs/serve-search.png", "docs/serve-duplicates.png"} <= links
    assert "--allow-remote" in README and "no login and no TLS" in README


def test_readme_quick_start_is_what_the_makefile_does():
    targets = set(re.findall(r"^([a-z][\w-]*):", MAKEFILE, flags=re.M))
    for text in TEXTS.values():
        code = "\n".join([span for span, _ in inline_spans(text)] + code_block_lines(text))
        for target in re.findall(r"(?<![\w-])make ([a-z][\w-]*)", code):
            assert target in targets, f"`make {target}` is named in the docs but is no Makefile target"
    assert {"demo", "test"} <= set(re.findall(r"`?make (demo|test)\b", README))
    recipe = re.search(r"^demo:.*?\n((?:\t.*\n)+)", MAKEFILE, flags=re.M).group(1)
    index = re.search(r"^DEMO_INDEX \?= (\S+)", MAKEFILE, flags=re.M).group(1)
    runs = [line.strip().replace("$(VENV)/bin/", "").replace("$(DEMO_INDEX)", index)
            for line in recipe.splitlines()]
    assert runs and all(run.startswith("vsearch ") for run in runs), runs
    for run in runs:
        assert run in README, f"`make demo` runs `{run}`, which the README's quick start does not show"
    test_recipe = re.search(r"^test:.*?\n\t(.*)\n", MAKEFILE, flags=re.M).group(1)
    assert "-m pytest -q -rs" in test_recipe and "pytest -q -rs" in README


# --- README and docs ------------------------------------------------------------------------

REPO_PATH = re.compile(r"(?<![\w./~$-])((?:vsearch|benchmarks|docs|tests|sample_images|\.ci)/[\w./*-]*)")


def path_claims() -> list[tuple[str, str]]:
    claims = []
    for path, text in TEXTS.items():
        code = [span for span, _ in inline_spans(text)] + code_block_lines(text)
        for piece in code:
            for found in REPO_PATH.findall(piece):
                claims.append((path.relative_to(REPO).as_posix(), found.rstrip(".,:;)")))
    return claims


def test_every_repository_path_the_docs_name_exists():
    claims = path_claims()
    assert ("docs/scaling.md", "benchmarks/bench_scale.py") in claims, "the path scan finds paths"
    missing = []
    for doc, name in claims:
        if "*" in name:
            ok = any(REPO.glob(name))
        else:
            ok = (REPO / name).exists()
        if not ok:
            missing.append(f"{doc}: {name}")
    assert not missing, "paths named in the docs that the repository does not have:\n" + "\n".join(missing)


def test_every_relative_link_in_the_docs_exists():
    for path, text in DOCS.items():
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text):
            if "://" in target or target.startswith("mailto:"):
                continue
            assert (path.parent / target).exists(), f"{path.name} links to {target}, which is not there"


def test_every_vsearch_module_the_docs_name_exists():
    missing = []
    for path, text in TEXTS.items():
        code = [span for span, _ in inline_spans(text)] + code_block_lines(text)
        for piece in code:
            for dotted in re.findall(r"(?<![\w.])vsearch(?:\.[A-Za-z_]\w*)+", piece):
                parts = dotted.split(".")
                module = None
                for n in range(len(parts), 0, -1):
                    base = REPO.joinpath(*parts[:n])
                    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
                        if candidate.is_file():
                            module, rest = candidate, parts[n:]
                            break
                    if module:
                        break
                if module is None or (rest and not re.search(rf"\b{re.escape(rest[0])}\b",
                                                             module.read_text(encoding="utf-8"))):
                    missing.append(f"{path.name}: {dotted}")
    assert not missing, "modules or names the docs cite that do not exist:\n" + "\n".join(missing)


def test_every_option_the_docs_give_a_command_is_in_its_help():
    options = command_options()
    every = set().union(*options.values())
    claims = option_claims()
    assert any(c[:4] == ("README.md", "--move-to", "vsearch", "duplicates") for c in claims)
    assert any(c[:4] == ("docs/compression.md", "--vectors", "vsearch", "build-index") for c in claims)
    wrong = []
    for doc, option, kind, owner, code in claims:
        if kind == "vsearch" and owner and option not in options[owner]:
            wrong.append(f"{doc}: `vsearch {owner}` has no {option} (in: {code})")
        elif kind == "any" and option not in every:
            bench = any(f'"{option}"' in source for source in BENCHMARKS.values())
            if not bench:
                wrong.append(f"{doc}: {option} is an option of no command (in: {code})")
        elif kind == "bench" and f'"{option}"' not in BENCHMARKS[owner]:
            wrong.append(f"{doc}: benchmarks/{owner} has no {option} (in: {code})")
    assert not wrong, "options the docs name that do not exist there:\n" + "\n".join(wrong)


@pytest.mark.parametrize("line, expect", [
    ("vsearch query x.jpg --k 5 --no-such-option", "`vsearch query` has no --no-such-option"),
    ("vsearch serve --allow-remote && vsearch info --trees 3", "`vsearch info` has no --trees"),
    ("vsearch undo --yes   # undo takes no --yes", "`vsearch undo` has no --yes"),
    ("--frobnicate 3", "--frobnicate is an option of no command"),
    ("python benchmarks/bench_scale.py synthetic --frob", "benchmarks/bench_scale.py has no --frob"),
])
def test_the_option_check_fails_on_a_wrong_option(monkeypatch, line, expect):
    """The check above is a real one: a doc naming an option its command lacks fails it."""
    doc = REPO / "docs" / "planted.md"
    monkeypatch.setitem(TEXTS, doc, f"# planted\n\n```sh\n{line}\n```\n\nand `{line.split('  #')[0]}`.\n")
    with pytest.raises(AssertionError, match=re.escape(expect)):
        test_every_option_the_docs_give_a_command_is_in_its_help()


def test_the_path_check_fails_on_a_missing_path(monkeypatch):
    monkeypatch.setitem(TEXTS, REPO / "docs" / "planted.md", "See `vsearch/indexer.py` for the pipeline.\n")
    with pytest.raises(AssertionError, match=re.escape("vsearch/indexer.py")):
        test_every_repository_path_the_docs_name_exists()


def test_segments_give_each_option_to_the_command_before_it():
    assert segments("vsearch judgments export --out p.csv && vsearch evaluate --pairs p.csv") == [
        "vsearch judgments export --out p.csv", "vsearch evaluate --pairs p.csv"]
    code, comment = split_comment("vsearch query a.jpg -f paths | xargs ls --color  # then --k 5")
    assert segments(code) == ["vsearch query a.jpg -f paths", "xargs ls --color"] and comment == "then --k 5"
    assert segments("vsearch evaluate (--pairs F | --groups F)") == ["vsearch evaluate (--pairs F | --groups F)"]


def test_the_module_check_fails_on_a_moved_module(monkeypatch):
    monkeypatch.setitem(TEXTS, REPO / "docs" / "planted.md",
                        "Built by `vsearch.indexer.update`; see `vsearch.imaging.images.no_such_function`.\n")
    with pytest.raises(AssertionError, match=r"vsearch\.indexer\.update(.|\n)*no_such_function"):
        test_every_vsearch_module_the_docs_name_exists()
