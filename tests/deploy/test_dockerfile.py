"""A small, documented lint of deploy/Dockerfile (hadolint is not packaged for Debian).

Rules, each named after the hadolint rule it stands in for where there is one:

- ``multi-stage``: at least two stages, so build tools stay out of the runtime image.
- ``pinned-base`` (DL3006, DL3007): every ``FROM`` that is not an earlier stage names an image with
  a version tag (or a digest), never ``latest``; no ``--from=`` an unpinned image either.
- ``non-root`` (DL3002): the final stage sets ``USER`` to a non-root user, and nothing switches back.
- ``no-remote-add`` (DL3020): ``ADD`` of a URL or git repository is refused (use ``COPY``, or a
  build step that checks what it downloads); ``ADD`` of local files is refused too, since ``COPY``
  says what it does.
- ``no-pip-cache`` (DL3042): ``pip install`` runs with ``--no-cache-dir``.
- ``exec-form`` (DL3025): ``ENTRYPOINT`` and ``CMD`` use the JSON (exec) form, so signals reach the
  worker and it can finish its batch on ``docker stop``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO_ROOT / "deploy" / "Dockerfile"


@dataclass(frozen=True)
class Instruction:
    line: int
    keyword: str
    arguments: str


def instructions(text: str) -> list[Instruction]:
    """Instructions with their continuation lines joined; comments and blank lines dropped."""
    found: list[Instruction] = []
    pending, start = "", 0
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue  # a comment inside a continued instruction
        if not pending:
            start = number
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, arguments = (pending + line).partition(" ")
        found.append(Instruction(start, keyword.upper(), arguments.strip()))
        pending = ""
    return found


def _pinned(image: str) -> bool:
    if "@sha256:" in image:
        return True
    name, _, tag = image.rpartition(":")
    if not name or "/" in tag:  # "host:5000/repo" has no tag
        return False
    return tag != "latest" and re.search(r"\d", tag) is not None


def dockerfile_problems(text: str) -> list[str]:
    problems: list[str] = []
    steps = instructions(text)
    stages: list[str] = []
    final_user: str | None = None
    for step in steps:
        where = f"line {step.line}: {step.keyword}"
        if step.keyword == "FROM":
            words = [w for w in step.arguments.split() if not w.startswith("--")]
            image = words[0]
            if image.lower() not in stages and not _pinned(image):
                problems.append(f"{where} {image}: pin the base image to a version tag or digest, not latest")
            stages.append(words[2].lower() if len(words) >= 3 and words[1].upper() == "AS" else "")
            final_user = None
        elif step.keyword == "USER":
            final_user = step.arguments.split(":")[0]
        elif step.keyword == "ADD":
            if re.search(r"(https?|ftp)://|git@|\.git\b", step.arguments):
                problems.append(f"{where}: ADD of a remote source; download in a RUN step and verify it")
            else:
                problems.append(f"{where}: use COPY for local files")
        elif step.keyword == "COPY":
            source = re.search(r"--from=(\S+)", step.arguments)
            if source and source.group(1).lower() not in stages and not _pinned(source.group(1)):
                problems.append(f"{where} --from={source.group(1)}: not an earlier stage nor a pinned image")
        elif step.keyword == "RUN":
            if re.search(r"\bpip3? install\b", step.arguments) and "--no-cache-dir" not in step.arguments:
                problems.append(f"{where}: pip install without --no-cache-dir")
        elif step.keyword in {"ENTRYPOINT", "CMD"}:
            try:
                parsed = json.loads(step.arguments)
            except ValueError:
                parsed = None
            if not isinstance(parsed, list):
                problems.append(f'{where}: use the exec form, {step.keyword} ["..."]')
        if re.search(r":latest\b", step.arguments):
            problems.append(f"{where}: refers to a latest tag")
    if len(stages) < 2:
        problems.append("single stage: build in one stage and copy only what runs into the final one")
    if final_user is None:
        problems.append("the final stage runs as root: add USER with a non-root user")
    elif final_user in {"root", "0"}:
        problems.append(f"the final stage runs as {final_user}")
    return problems


def test_the_worker_dockerfile_passes() -> None:
    assert dockerfile_problems(DOCKERFILE.read_text(encoding="utf-8")) == []


def test_the_image_runs_the_worker_as_a_numeric_unprivileged_user() -> None:
    steps = instructions(DOCKERFILE.read_text(encoding="utf-8"))
    user = [s.arguments for s in steps if s.keyword == "USER"][-1]
    uid = int(user.split(":")[0])
    assert uid >= 1000
    assert [s.arguments for s in steps if s.keyword == "ENTRYPOINT"] == ['["salespulse"]']
    assert [s.arguments for s in steps if s.keyword == "CMD"][-1] == '["worker"]'


def test_what_the_image_copies_exists_and_is_not_docker_ignored() -> None:
    ignored = [
        line.strip()
        for line in (REPO_ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for step in instructions(DOCKERFILE.read_text(encoding="utf-8")):
        if step.keyword != "COPY" or "--from=" in step.arguments:
            continue
        *sources, _destination = step.arguments.split()
        for source in sources:
            assert (REPO_ROOT / source).exists(), f"COPY {source}: not in the repository"
            assert source.rstrip("/") not in ignored, f"COPY {source}: excluded by .dockerignore"
    assert {".venv", ".salespulse", ".git", ".env"} <= set(ignored)


@pytest.mark.parametrize(
    ("dockerfile", "expected"),
    [
        ("FROM python\nUSER app\n", ["pin the base image", "single stage"]),
        ("FROM python:latest AS b\nFROM python:3.11.7-slim\nUSER app\n", ["not latest"]),
        ("FROM python:3.11 AS b\nFROM python:3.11\nRUN true\n", ["runs as root"]),
        ("FROM python:3.11 AS b\nFROM python:3.11\nUSER app\nUSER root\n", ["runs as root"]),
        (
            "FROM python:3.11 AS b\nFROM python:3.11\nADD https://x.example/a.tgz /a\nUSER 10\n",
            ["remote source"],
        ),
        ("FROM python:3.11 AS b\nFROM python:3.11\nADD . /src\nUSER 10\n", ["use COPY"]),
        ("FROM python:3.11 AS b\nFROM python:3.11\nRUN pip install \\\n  x\nUSER 10\n", ["--no-cache-dir"]),
        ("FROM python:3.11 AS b\nFROM python:3.11\nUSER 10\nCMD salespulse worker\n", ["exec form"]),
        ("FROM python:3.11 AS b\nFROM python:3.11\nCOPY --from=tool:latest /x /x\nUSER 10\n", ["latest"]),
        ("FROM python@sha256:" + "a" * 64 + " AS b\nFROM b\nUSER 10\n", []),
    ],
)
def test_the_lint_catches_what_it_claims(dockerfile: str, expected: list[str]) -> None:
    problems = dockerfile_problems(dockerfile)
    for fragment in expected:
        assert any(fragment in problem for problem in problems), (fragment, problems)
    if not expected:
        assert problems == []
