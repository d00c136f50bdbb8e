"""Readers for the container files: Compose interpolation, ``.env`` files, Dockerfiles, image pins.

Small, dependency-free re-implementations of what ``docker compose config`` and ``docker build`` do
with these files, enough to check them on a machine without a Docker engine.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO_ROOT / "docker-compose.yaml"
ENV_EXAMPLE = REPO_ROOT / ".env.example"
DOCKERIGNORE = REPO_ROOT / ".dockerignore"

# ------------------------------------------------------------------------------------------------
# Compose variable interpolation (https://docs.docker.com/reference/compose-file/interpolation/)
# ------------------------------------------------------------------------------------------------

_TOKEN = re.compile(r"\$\$|\$\{(?P<expr>[^{}]*)\}|\$(?P<bare>[A-Za-z_][A-Za-z0-9_]*)")
_EXPR = re.compile(r"(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:-|-|:\?|\?|:\+|\+)(?P<arg>.*))?", re.S)


class InterpolationError(ValueError):
    """A ``${VAR:?message}`` whose variable is unset or empty, or an expression Compose rejects."""


@dataclass(frozen=True)
class VarRef:
    """One ``${NAME<op><arg>}`` (or ``$NAME``) in a Compose file."""

    name: str
    op: str = ""
    arg: str = ""

    @property
    def required(self) -> bool:
        """``${NAME:?msg}``: Compose stops when NAME is unset or empty."""
        return self.op == ":?"


def var_refs(text: str) -> list[VarRef]:
    """Every variable reference in ``text`` (``$$`` is an escaped dollar, not a reference).

    Raises:
        InterpolationError: An expression this reader (and often Compose) cannot parse, such as a
            nested ``${A:-${B}}``.
    """
    refs = []
    for match in _TOKEN.finditer(text):
        if match.group(0) == "$$":
            continue
        if match.group("bare"):
            refs.append(VarRef(match.group("bare")))
            continue
        parsed = _EXPR.fullmatch(match.group("expr"))
        if parsed is None:
            raise InterpolationError(f"cannot parse ${{{match.group('expr')}}}")
        refs.append(VarRef(parsed.group("name"), parsed.group("op") or "", parsed.group("arg") or ""))
    leftover = _TOKEN.sub("", text)
    if "${" in leftover:
        raise InterpolationError(f"unbalanced or nested ${{...}} in: {text!r}")
    return refs


def _substitute(text: str, env: Mapping[str, str]) -> str:
    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        if match.group("bare"):
            return env.get(match.group("bare"), "")
        parsed = _EXPR.fullmatch(match.group("expr"))
        if parsed is None:
            raise InterpolationError(f"cannot parse ${{{match.group('expr')}}}")
        name, op, arg = parsed.group("name"), parsed.group("op") or "", parsed.group("arg") or ""
        value = env.get(name)
        if op == ":-":
            return value if value else arg
        if op == "-":
            return value if value is not None else arg
        if op == ":?":
            if not value:
                raise InterpolationError(f"{name}: {arg}")
            return value
        if op == "?":
            if value is None:
                raise InterpolationError(f"{name}: {arg}")
            return value
        if op == ":+":
            return arg if value else ""
        if op == "+":
            return arg if value is not None else ""
        return value or ""

    return _TOKEN.sub(replace, text)


def interpolate(node: Any, env: Mapping[str, str]) -> Any:
    """Resolve variables in every string value of a loaded Compose document, as Compose does."""
    if isinstance(node, str):
        var_refs(node)  # rejects what Compose would reject
        return _substitute(node, env)
    if isinstance(node, list):
        return [interpolate(item, env) for item in node]
    if isinstance(node, dict):
        return {key: interpolate(value, env) for key, value in node.items()}
    return node


# ------------------------------------------------------------------------------------------------
# .env files
# ------------------------------------------------------------------------------------------------


def read_env_file(path: Path) -> dict[str, str]:
    """``KEY=VALUE`` lines of a Compose ``.env`` file (comments and blank lines skipped).

    Raises:
        ValueError: A line that is neither a comment nor ``KEY=VALUE``, or a key given twice.
    """
    values: dict[str, str] = {}
    for number, raw in enumerate(path.read_text().splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        key = key.strip()
        if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
            raise ValueError(f"{path.name}:{number}: not KEY=VALUE: {raw!r}")
        if key in values:
            raise ValueError(f"{path.name}:{number}: {key} is defined twice")
        values[key] = value.strip().strip("'\"")
    return values


# ------------------------------------------------------------------------------------------------
# Image references
# ------------------------------------------------------------------------------------------------

# Images whose upstream releases carry two numbers (PostgreSQL 10+: 16.15 is an exact release).
TWO_PART_VERSIONED = frozenset({"postgres"})
_VERSION_PREFIX = re.compile(r"v?(\d+(?:\.\d+)*)")


@dataclass(frozen=True)
class ImageRef:
    """``[registry/]repository[:tag][@digest]``."""

    repository: str
    tag: str = ""
    digest: str = ""

    @classmethod
    def parse(cls, ref: str) -> ImageRef:
        rest, _, digest = ref.partition("@")
        slash = rest.rfind("/")
        colon = rest.rfind(":")
        if colon > slash:
            return cls(rest[:colon], rest[colon + 1 :], digest)
        return cls(rest, "", digest)

    @property
    def name(self) -> str:
        """The last path element (``postgres`` for ``docker.io/library/postgres``)."""
        return self.repository.rsplit("/", 1)[-1]

    def pin_problem(self) -> str | None:
        """Why this reference is not pinned to one release, or None when it is.

        Pinned means a ``sha256`` digest, or a tag naming an exact release: three version numbers
        (``3.11.14-slim-bookworm``, ``v3.5.0``), two for images versioned that way (``postgres:16.15``).
        """
        if self.digest:
            return None if self.digest.startswith("sha256:") else f"unknown digest {self.digest!r}"
        if not self.tag:
            return "no tag (means latest)"
        if self.tag == "latest":
            return "tag latest"
        version = _VERSION_PREFIX.match(self.tag)
        if version is None:
            return f"tag {self.tag!r} names no version"
        parts = version.group(1).split(".")
        needed = 2 if self.name in TWO_PART_VERSIONED else 3
        if len(parts) < needed:
            return f"tag {self.tag!r} is a moving {len(parts)}-part version; name the exact release"
        return None


# ------------------------------------------------------------------------------------------------
# Dockerfiles
# ------------------------------------------------------------------------------------------------


@dataclass
class Instruction:
    keyword: str
    value: str
    line: int


@dataclass
class Stage:
    base: str
    name: str = ""
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]


def dockerfile_instructions(text: str) -> list[Instruction]:
    """Instructions of a Dockerfile with continuation lines joined and comments dropped."""
    instructions: list[Instruction] = []
    pending: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if pending and stripped.startswith("#"):
            continue  # comment lines inside a continued instruction are ignored by BuildKit
        if not pending:
            start = number
        if stripped.endswith("\\"):
            pending.append(stripped[:-1].strip())
            continue
        pending.append(stripped)
        joined = " ".join(p for p in pending if p)
        keyword, _, value = joined.partition(" ")
        instructions.append(Instruction(keyword.upper(), value.strip(), start))
        pending = []
    if pending:
        raise ValueError("Dockerfile ends inside a continued instruction")
    return instructions


def dockerfile_stages(text: str) -> tuple[dict[str, str], list[Stage]]:
    """The global ``ARG`` defaults and the build stages (``FROM ... [AS name]``) of a Dockerfile."""
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for instruction in dockerfile_instructions(text):
        if instruction.keyword == "FROM":
            words = [w for w in instruction.value.split() if not w.startswith("--")]
            base = words[0]
            name = words[2] if len(words) >= 3 and words[1].lower() == "as" else ""
            stages.append(Stage(base=base, name=name))
        elif not stages:
            if instruction.keyword == "ARG":
                key, _, default = instruction.value.partition("=")
                global_args[key.strip()] = default.strip().strip("'\"")
        else:
            stages[-1].instructions.append(instruction)
    return global_args, stages


def expand_args(value: str, args: Mapping[str, str]) -> str:
    """``${NAME}`` / ``$NAME`` in a FROM line, from the global ARG defaults."""
    return re.sub(
        r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?",
        lambda m: args.get(m.group(1), m.group(0)),
        value,
    )


# ------------------------------------------------------------------------------------------------
# .dockerignore
# ------------------------------------------------------------------------------------------------


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    out = []
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out))


def dockerignore_excludes(rules: list[str], path: str) -> bool:
    """Whether Docker leaves ``path`` (relative, ``/``-separated) out of the build context.

    The last matching rule wins; a rule that matches a folder also matches everything under it.
    """
    excluded = False
    parts = path.strip("/").split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for raw in rules:
        negate = raw.startswith("!")
        pattern = raw[1:] if negate else raw
        pattern = pattern.strip().strip("/")
        if not pattern:
            continue
        regex = _pattern_regex(pattern)
        if any(regex.fullmatch(prefix) for prefix in prefixes):
            excluded = not negate
    return excluded


def dockerignore_rules(path: Path = DOCKERIGNORE) -> list[str]:
    return [
        line.strip()
        for line in path.read_text().splitlines()
        if line.strip() and not line.strip().startswith("#")
    ]
