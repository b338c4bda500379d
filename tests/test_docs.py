"""The documentation stays true: every setting is in the configuration reference with its default, every `QEXEC_*`
name the pages mention is one qexec reads, every relative link lands, and the README stays short."""

from __future__ import annotations

import enum
import re
from pathlib import Path

import pytest
from pydantic import AliasChoices
from pydantic_core import PydanticUndefined

from qexec.config import ACCOUNT_SETTINGS, Settings

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = ROOT / "docs"
CONFIGURATION = DOCS / "configuration.md"
PAGES = [README, *sorted(DOCS.glob("*.md"))]
README_MAX_LINES = 260

# The heading in docs/configuration.md under which the variables read outside `Settings` are listed.
OUTSIDE_HEADING = "## Variables read outside `Settings`"
# A `QEXEC_*` name as the pages write it; `QEXEC_VISIBILITY_*` and `QEXEC_*` are families, not names.
NAME = re.compile(r"\bQEXEC_[A-Z0-9_]*[A-Z0-9](?![\w*])")
# A variable qexec reads from the environment itself: a string literal naming it in the package's source.
LITERAL = re.compile(r"""["'](QEXEC_[A-Z0-9_]*[A-Z0-9])["']""")  # a name; "QEXEC_ACCOUNT_" is a family's prefix
ROW = re.compile(r"\|\s*`(QEXEC_[A-Z0-9_]+)`\s*\|")
FENCE = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def setting_variables() -> dict[str, str]:
    """Each `Settings` field's environment variable -> the field (the prefix and the aliases as pydantic-settings
    reads them: an alias is taken as it is, without the prefix)."""
    prefix = str(Settings.model_config.get("env_prefix", ""))
    variables: dict[str, str] = {}
    for name, field in Settings.model_fields.items():
        alias = field.validation_alias or field.alias
        if isinstance(alias, str):
            names = [alias]
        elif isinstance(alias, AliasChoices):
            names = [choice for choice in alias.choices if isinstance(choice, str)]
        else:
            names = [prefix + name]
        variables.update({variable.upper(): name for variable in names})
    return variables


def literal_variables() -> set[str]:
    """Every `QEXEC_*` variable named by a string literal anywhere in qexec's source (e.g. QEXEC_EMBEDDED_REDIS)."""
    return {name for path in (ROOT / "qexec").rglob("*.py") for name in LITERAL.findall(path.read_text())}


def outside_variables() -> set[str]:
    """The `QEXEC_*` variables qexec reads that are not `Settings` fields."""
    return literal_variables() - set(setting_variables())


def split_reference(text: str) -> tuple[str, str]:
    """The configuration page as (the settings reference, the part on variables read outside `Settings`)."""
    head, _, outside = text.partition("\n" + OUTSIDE_HEADING + "\n")
    return head, outside


def cells(line: str) -> list[str]:
    """The cells of a markdown table line."""
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


def rows(text: str) -> dict[str, dict[str, str]]:
    """Table rows whose first cell is one `QEXEC_*` variable: variable -> {column heading: cell}."""
    found: dict[str, dict[str, str]] = {}
    header: list[str] = []
    lines = text.splitlines()
    for line, following in zip(lines, [*lines[1:], ""], strict=True):
        if re.fullmatch(r"\|(\s*:?-+:?\s*\|)+", following.strip()):
            header = cells(line)
        elif match := ROW.match(line):
            found[match[1]] = dict(zip(header, cells(line), strict=False))
    return found


def documented_default(value: object) -> str | None:
    """How the pages write a field's default; None when it is no literal (unset, empty, computed at start)."""
    if value is None or value is PydanticUndefined or value == "":
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, enum.Enum):
        return str(value.value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def missing_settings(text: str) -> list[str]:
    """The settings the reference part of `text` has no row for."""
    documented = rows(split_reference(text)[0])
    return sorted(set(setting_variables()) - set(documented))


def rows_no_setting_reads(text: str) -> list[str]:
    """Rows of the settings reference that name a variable no `Settings` field reads."""
    return sorted(set(rows(split_reference(text)[0])) - set(setting_variables()))


# An account's own setting, QEXEC_ACCOUNT_<NAME>_<SETTING> (qexec/config.py reads it for each configured account).
ACCOUNT_VARIABLE = re.compile(
    r"QEXEC_ACCOUNT_[A-Z][A-Z0-9_]*_(?:" + "|".join(field.upper() for field in ACCOUNT_SETTINGS) + ")"
)


def names_qexec_does_not_read(text: str) -> list[str]:
    """`QEXEC_*` names in `text` that neither a setting, an account's setting nor any other code of qexec reads."""
    known = set(setting_variables()) | literal_variables()
    return sorted(name for name in set(NAME.findall(text)) - known if not ACCOUNT_VARIABLE.fullmatch(name))


def wrong_defaults(text: str) -> list[str]:
    """Rows of `text`'s tables whose "default" cell does not hold the setting's default (backticks or not)."""
    wrong = []
    variables = setting_variables()
    for variable, row in rows(split_reference(text)[0]).items():
        field_name = variables.get(variable)
        default = documented_default(Settings.model_fields[field_name].default) if field_name else None
        written = row.get("default")
        if default is None or written is None:
            continue
        if not re.search(rf"(?<![\w.]){re.escape(default)}(?![\w.])", written.replace("`", "")):
            wrong.append(f"{variable}: the code's default is {default}, the page says {written}")
    return wrong


def github_slug(heading: str) -> str:
    """The anchor GitHub gives a heading: link targets and markup dropped, lower case, punctuation removed, spaces
    to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip())
    return re.sub(r"[^\w\- ]", "", text.lower()).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every heading anchor of a markdown file, repeated headings numbered as GitHub numbers them (`-1`, `-2`)."""
    found: set[str] = set()
    seen: dict[str, int] = {}
    for line in FENCE.sub("", path.read_text()).splitlines():
        heading = re.match(r"#{1,6} (.+)", line)
        if heading:
            slug = github_slug(heading[1])
            count = seen.get(slug, 0)
            seen[slug] = count + 1
            found.add(slug if count == 0 else f"{slug}-{count}")
    return found


def broken_links(path: Path) -> list[str]:
    """The relative links of a markdown file (outside code) whose file, or heading, does not exist."""
    text = re.sub(r"`[^`\n]*`", "", FENCE.sub("", path.read_text()))
    broken = []
    for target in LINK.findall(text):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto: ... are not checked here
            continue
        file_part, _, anchor = target.partition("#")
        linked = (path.parent / file_part).resolve() if file_part else path
        if not linked.exists():
            broken.append(f"{target}: no {linked.relative_to(ROOT) if linked.is_relative_to(ROOT) else linked}")
        elif anchor and linked.suffix == ".md" and anchor not in anchors(linked):
            broken.append(f"{target}: no heading with that anchor")
    return broken


def test_every_setting_has_a_row_in_the_configuration_reference() -> None:
    """A new field of `Settings` without a row in docs/configuration.md fails here."""
    missing = missing_settings(CONFIGURATION.read_text())
    assert missing == [], "each needs a row of its own in docs/configuration.md, first cell `QEXEC_...`"


def test_every_row_of_the_settings_reference_is_a_setting() -> None:
    """A row for a variable `Settings` does not read (renamed, removed, or read elsewhere) fails here."""
    assert rows_no_setting_reads(CONFIGURATION.read_text()) == []


@pytest.mark.parametrize("page", PAGES, ids=lambda page: str(page.relative_to(ROOT)))
def test_the_defaults_a_page_gives_are_the_settings_defaults(page: Path) -> None:
    """In every table with a "default" column, a setting's row holds the field's default when that is a literal."""
    assert wrong_defaults(page.read_text()) == []


def test_variables_read_outside_settings_are_documented_apart() -> None:
    """QEXEC_EMBEDDED_REDIS and its kind have rows of their own, under their own heading, and nothing else does."""
    outside = split_reference(CONFIGURATION.read_text())[1]
    assert outside, f"docs/configuration.md has no {OUTSIDE_HEADING!r} section"
    assert set(rows(outside)) == outside_variables()


@pytest.mark.parametrize("page", PAGES, ids=lambda page: str(page.relative_to(ROOT)))
def test_every_qexec_variable_a_page_names_is_one_qexec_reads(page: Path) -> None:
    """A stale or misspelt `QEXEC_*` name in the README or docs/ fails here."""
    assert names_qexec_does_not_read(page.read_text()) == []


@pytest.mark.parametrize("page", PAGES, ids=lambda page: str(page.relative_to(ROOT)))
def test_every_relative_link_points_at_an_existing_file_and_heading(page: Path) -> None:
    """Links between the pages (and to files of the repository) land, anchors included."""
    assert broken_links(page) == []


def test_the_readme_is_at_most_260_lines() -> None:
    """The README is a front page; the rest is in docs/."""
    assert len(README.read_text().splitlines()) <= README_MAX_LINES


def test_the_readme_opens_with_its_two_commands() -> None:
    """`make up` and `make test` are the first code block of the README."""
    first_block = FENCE.search(README.read_text())
    assert first_block is not None
    commands = [line.split("#")[0].strip() for line in first_block[0].splitlines()[1:-1]]
    assert commands == ["make up", "make test"]


@pytest.mark.parametrize(
    ("heading", "slug"),
    [
        ("The exit monitor (`qexec.watch_positions`, beat)", "the-exit-monitor-qexecwatch_positions-beat"),
        ("The venue's streams", "the-venues-streams"),
        ("Metrics (`/metrics` on the bridge)", "metrics-metrics-on-the-bridge"),
        ("Safety: rate limits, errors, risk, secrets, bad input", "safety-rate-limits-errors-risk-secrets-bad-input"),
    ],
)
def test_a_heading_gets_the_anchor_github_gives_it(heading: str, slug: str) -> None:
    """The anchor rules the link check relies on, on headings these pages have."""
    assert github_slug(heading) == slug
