"""Ablation plans as written by people and planning assistants -> :class:`PlanSection` lists.

Two input forms carry the same content:

- **Markdown** (``.md``, ``.html``, anything not YAML): each ablation is a section under a
  heading (``###`` usually; any level, or ``<h1>``-``<h6>``) with bullet fields whose names are
  bold and followed by a colon::

      ### Ablation 2: outlier-aware salience
      - **Ablated Part**: Outlier-aware salience scoring (mechanism)
      - **Action**: REPLACE
      - **Replacement**:
        - random scoring
        - magnitude-based scoring
      - **Metrics**: task performance, training time

  The text may be wrapped in HTML (``<div>``, ``<style>``, ``<h2>``, even ``<ul><li>``) and
  preceded by prose; sections without an ``Ablated Part`` or ``Action`` field are ignored.
- **YAML** (``.yaml`` / ``.yml``): ``ablations:`` (or a top-level list) of mappings with the
  same fields (``ablated_part`` / ``Ablated Part``, ``action``, ``replacement`` (a list or a
  comma-separated string), ``metrics``), optionally ``name``; a top-level ``method:`` is
  returned as the plan's method hint.

Every problem is collected first and raised as one :class:`PlanFormatError` that quotes the
offending sections; nothing is run for a plan with a problem.
"""
from __future__ import annotations

import html
import re
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

import yaml

from lmprune.errors import LmpruneError

ACTIONS = ("remove", "replace")
#: Field name (normalized: lower case, single spaces) -> the field it fills.
FIELDS = {
    "ablated part": "part", "ablated component": "part", "part": "part", "component": "part",
    "ablated module": "part",
    "action": "action", "ablation type": "action", "operation": "action",
    "replacement": "replacements", "replacements": "replacements",
    "replace with": "replacements", "alternatives": "replacements",
    "alternative": "replacements",
    "metrics": "metrics", "metric": "metrics", "evaluation metrics": "metrics",
    "measured metrics": "metrics",
}


class PlanFormatError(LmpruneError):
    """A plan that cannot be read: every problem, each quoting its section."""

    def __init__(self, problems: list[str], source: str | None = None):
        self.problems = list(problems)
        head = f"{len(self.problems)} problem(s) in ablation plan" + (f" {source}" if source
                                                                      else "")
        super().__init__(head + " (nothing was run):\n" + "\n".join(
            "  - " + p.replace("\n", "\n    ") for p in self.problems))


@dataclass
class PlanSection:
    """One ablation as written: free text, to be matched against the component registry."""

    title: str
    part: str
    action: str  # "remove" or "replace"
    replacements: list[str] = field(default_factory=list)
    metrics: list[str] = field(default_factory=list)
    text: str = ""  # the section as written (quoted in errors)

    def quote(self, lines: int = 8) -> str:
        return quote(self.text, lines)


@dataclass
class Plan:
    sections: list[PlanSection]
    method: str | None = None  # a YAML plan's ``method:``
    source: str = ""


def quote(text: str, lines: int = 8) -> str:
    """``text`` indented as a quotation, cut to ``lines`` non-empty lines."""
    kept = [line.rstrip() for line in text.strip().splitlines() if line.strip()]
    cut = kept[:lines] + (["..."] if len(kept) > lines else [])
    return "\n".join("  | " + line for line in cut)


# ------------------------------------------------------------------------------ entry point

def read_plan(path: str | Path) -> Plan:
    """Parse the plan file at ``path`` (YAML by extension, else markdown/HTML)."""
    path = Path(path)
    if not path.is_file():
        raise LmpruneError(f"ablation plan not found: {path}")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise LmpruneError(f"cannot read ablation plan {path}: {exc}") from None
    if path.suffix.lower() in (".yaml", ".yml"):
        return parse_yaml(text, str(path))
    return parse_markdown(text, str(path))


# ---------------------------------------------------------------------------------- markdown

class _HtmlToMarkdown(HTMLParser):
    """Enough HTML -> markdown for plans: headings, bold, list items (nested), line breaks.

    ``<style>``/``<script>`` contents are dropped; every other tag is removed.
    """

    BLOCK = {"div", "p", "br", "section", "article", "body", "html", "table", "tr", "pre",
             "blockquote", "ul", "ol", "hr"}

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []
        self.skip = 0
        self.lists = 0

    def handle_starttag(self, tag, attrs):
        if tag in ("style", "script", "head"):
            self.skip += 1
        elif re.fullmatch(r"h[1-6]", tag):
            self.out.append("\n" + "#" * int(tag[1]) + " ")
        elif tag in ("strong", "b"):
            self.out.append("**")
        elif tag == "li":
            self.out.append("\n" + "  " * max(0, self.lists - 1) + "- ")
        elif tag in ("ul", "ol"):
            self.lists += 1
            self.out.append("\n")
        elif tag in self.BLOCK:
            self.out.append("\n")

    def handle_startendtag(self, tag, attrs):
        if tag in ("br", "hr"):
            self.out.append("\n")

    def handle_endtag(self, tag):
        if tag in ("style", "script", "head"):
            self.skip = max(0, self.skip - 1)
        elif tag in ("strong", "b"):
            self.out.append("**")
        elif tag in ("ul", "ol"):
            self.lists = max(0, self.lists - 1)
            self.out.append("\n")
        elif re.fullmatch(r"h[1-6]", tag) or tag in self.BLOCK or tag == "li":
            self.out.append("\n")

    def handle_data(self, data):
        if not self.skip:
            self.out.append(data)


def html_to_markdown(text: str) -> str:
    if "<" not in text:
        return text
    parser = _HtmlToMarkdown()
    parser.feed(text)
    parser.close()
    return html.unescape("".join(parser.out))


HEADING = re.compile(r"^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
# "- **Ablated Part**: x", "* **Action:** x", "**Metrics**: x", "1. __Action__: x"
FIELD_LINE = re.compile(
    r"^(?P<indent>\s*)(?:[-*+]|\d+[.)])?\s*(?:\*\*|__)(?P<name>[^*_:]+?)\s*"
    r"(?::\s*(?:\*\*|__)|(?:\*\*|__)\s*:)\s*(?P<value>.*)$")
# "- Ablated Part: x" (not bold): only in a bullet, and only for a known field name
PLAIN_FIELD_LINE = re.compile(
    r"^(?P<indent>\s*)(?:[-*+]|\d+[.)])\s+(?P<name>[A-Za-z][A-Za-z ]{1,30}?)\s*:\s*(?P<value>.*)$")
BULLET = re.compile(r"^(?P<indent>\s*)(?:[-*+]|\d+[.)])\s+(?P<value>.*)$")


def _chunks(markdown: str) -> list[tuple[str, list[str]]]:
    """``(heading, lines)`` per heading; text before the first heading is one more chunk."""
    chunks: list[tuple[str, list[str]]] = [("", [])]
    for line in markdown.splitlines():
        match = HEADING.match(line)
        if match:
            chunks.append((match.group(2).strip(), [line]))
        else:
            chunks[-1][1].append(line)
    return chunks


def _clean(value: str) -> str:
    """A field value without markdown emphasis, code marks or trailing punctuation."""
    value = re.sub(r"(\*\*|__|`)", "", value)
    value = re.sub(r"(?<!\w)[*_](\S(?:.*?\S)?)[*_](?!\w)", r"\1", value)
    return value.strip().strip(" .;:")


def _fields(lines: list[str]) -> dict[str, tuple[str, list[str]]]:
    """Field -> (inline value, nested bullet values) for one section's lines."""
    found: dict[str, tuple[str, list[str]]] = {}
    current: str | None = None
    for line in lines:
        match = FIELD_LINE.match(line)
        plain = PLAIN_FIELD_LINE.match(line) if match is None else None
        if plain and " ".join(plain.group("name").lower().split()) in FIELDS:
            match = plain
        if match:
            name = " ".join(_clean(match.group("name")).lower().split())
            current = FIELDS.get(name)  # unknown bold fields (rationale, ...) end the last one
            if current is not None:
                inline, bullets = found.get(current, ("", []))
                found[current] = ((inline + " " + _clean(match.group("value"))).strip(),
                                  bullets)
            continue
        if current is None or not line.strip() or HEADING.match(line):
            continue
        inline, bullets = found[current]
        bullet = BULLET.match(line)
        if bullet:
            bullets.append(_clean(bullet.group("value")))
        elif bullets:  # a wrapped continuation line
            bullets[-1] = (bullets[-1] + " " + _clean(line)).strip()
        else:
            found[current] = ((inline + " " + _clean(line)).strip(), bullets)
    return found


#: Values that say "nothing" (``- **Replacement**: N/A`` under a REMOVE).
EMPTY = {"none", "n/a", "na", "-", "—", "nothing", "not applicable", "no replacement"}


def _meaningful(items: list[str]) -> list[str]:
    return [item for item in items if item.lower() not in EMPTY]


def _split(values: list[str], words: bool = False) -> list[str]:
    """Items separated by commas or semicolons (and by 'and' / '&' with ``words``)."""
    pattern = r"\s*(?:[,;]|\band\b|&)\s*" if words else r"\s*[,;]\s*"
    return [_clean(item) for value in values for item in re.split(pattern, value)
            if _clean(item)]


def _section(title: str, part: str, action_text: str, replacements: list[str],
             metrics: list[str], text: str, problems: list[str]) -> PlanSection | None:
    """A checked section, or None after adding its problems (each quoting ``text``)."""
    name = title or "(untitled section)"
    replacements, metrics = _meaningful(replacements), _meaningful(metrics)
    action_words = re.findall(r"[a-z]+", action_text.lower())
    action = action_words[0] if action_words else ""
    mine = []
    if not part:
        mine.append(f"section {name!r} names no ablated part (a `- **Ablated Part**: ...` "
                    f"line)")
    if action not in ACTIONS:
        what = f"unknown action {action_text!r}" if action_text else "no action"
        mine.append(f"section {name!r} has {what}; use REMOVE or REPLACE")
    if action == "replace" and not replacements:
        mine.append(f"section {name!r} says REPLACE but lists no replacement (a "
                    f"`- **Replacement**:` field with one nested bullet per alternative)")
    if action == "remove" and replacements:
        mine.append(f"section {name!r} says REMOVE but lists replacements "
                    f"({', '.join(replacements)}); use REPLACE, or drop the replacements")
    if mine:
        problems.extend(m + ":\n" + quote(text) for m in mine)
        return None
    return PlanSection(name, part, action, replacements, metrics, text)


def parse_markdown(text: str, source: str = "") -> Plan:
    """Sections of a markdown (or HTML-wrapped markdown) plan; see the module docstring."""
    markdown = html_to_markdown(text)
    sections, problems = [], []
    for title, lines in _chunks(markdown):
        raw = _fields(lines)
        if "part" not in raw and "action" not in raw:
            continue  # prose, headings, the reasoning preamble
        part = " ".join([raw.get("part", ("", []))[0], *raw.get("part", ("", []))[1]]).strip()
        action = raw.get("action", ("", []))[0]
        inline, bullets = raw.get("replacements", ("", []))
        metrics_inline, metrics_bullets = raw.get("metrics", ("", []))
        section = _section(_clean(title), part, action, _split([inline]) + bullets,
                           _split([metrics_inline, *metrics_bullets], words=True),
                           "\n".join(lines), problems)
        if section is not None:
            sections.append(section)
    return _finish(Plan(sections, None, source), problems)


def _finish(plan: Plan, problems: list[str]) -> Plan:
    if not plan.sections and not problems:
        problems.append("no ablation section found: a plan needs at least one section with "
                        "`- **Ablated Part**: ...` and `- **Action**: REMOVE` or `REPLACE` "
                        "(or, in YAML, an `ablations:` list); see docs/ablation.md")
    if problems:
        raise PlanFormatError(problems, plan.source or None)
    return plan


# -------------------------------------------------------------------------------------- YAML

def _yaml_key(key) -> str | None:
    name = " ".join(str(key).replace("_", " ").replace("-", " ").lower().split())
    return FIELDS.get(name)


def _items(value, words: bool = False) -> list[str]:
    """A YAML list (one item each) or a string (comma-separated) as clean items."""
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return [_clean(str(v)) for v in value if v is not None and _clean(str(v))]
    return _split([str(value)], words)


def parse_yaml(text: str, source: str = "") -> Plan:
    """Sections of a YAML plan; see the module docstring."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise PlanFormatError([f"invalid YAML: {exc}"], source or None) from None
    method = None
    if isinstance(data, dict):
        method = data.get("method")
        key = next((k for k in ("ablations", "plan", "sections") if k in data), None)
        data = data[key] if key else {k: v for k, v in data.items()
                                      if isinstance(v, dict) and k != "method"}
    if isinstance(data, dict):  # {name: {fields}}
        data = [{"name": k, **v} if isinstance(v, dict) else v for k, v in data.items()]
    if not isinstance(data, list):
        return _finish(Plan([], method, source), [])
    sections, problems = [], []
    for index, entry in enumerate(data):
        if not isinstance(entry, dict):
            problems.append(f"ablation {index + 1} is not a mapping of fields: {entry!r}")
            continue
        raw = {_yaml_key(k): v for k, v in entry.items() if _yaml_key(k)}
        title = str(entry.get("name") or entry.get("title") or f"ablation {index + 1}")
        section = _section(title, " ".join(_items(raw.get("part"))),
                           " ".join(_items(raw.get("action"))), _items(raw.get("replacements")),
                           _items(raw.get("metrics"), words=True),
                           yaml.safe_dump([entry], sort_keys=False, allow_unicode=True),
                           problems)
        if section is not None:
            sections.append(section)
    return _finish(Plan(sections, str(method) if method else None, source), problems)
