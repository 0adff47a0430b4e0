"""Reading submitted notebooks, which are untrusted files: the rule that chooses a learner's notebook of a chapter
(`find_notebooks`), and reading it without following links or blocking (`read_submitted`, `submitted_copies`).
Used by the hidden-check harness (tests/harness.py) and the grader (tools/grade.py)."""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from tools.notebooks import solution_sources

MAX_NOTEBOOK_BYTES = int(os.environ.get("MICOURSE_MAX_NOTEBOOK_MB", "20")) << 20  # one submitted notebook
SKIPPED_FOLDERS = (".ipynb_checkpoints",)  # Jupyter's autosaves: never a submission


@dataclass
class Found:
    """A learner's notebooks of one chapter (relative to the learner's folder) and what was refused or set aside."""

    paths: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _refusal(rel: Path, st: os.stat_result) -> str | None:
    """Why the entry `rel` (its lstat) is not read, or None for a regular file of an acceptable size."""
    if stat.S_ISLNK(st.st_mode):
        return f"`{rel}` is a symbolic link: the grader reads only regular files; submit the notebook itself"
    if not stat.S_ISREG(st.st_mode):
        return f"`{rel}` is not a regular file (a pipe, a device or a socket): not read"
    if st.st_size > MAX_NOTEBOOK_BYTES:
        return (f"`{rel}` is {st.st_size / 2**20:.1f} MB, more than the {MAX_NOTEBOOK_BYTES >> 20} MB a notebook may "
                f"have: not read (clear the cells' outputs and submit it again)")
    return None


def find_notebooks(chapter: str, folder: Path) -> Found:
    """The notebooks of `chapter` in a learner's folder, chosen by the rule of the README ("For instructors"):

    a notebook is a regular file named like the chapter's notebook (01_framework.ipynb); symbolic links (to
    files or folders), pipes and devices are refused, and so are notebooks over MAX_NOTEBOOK_BYTES; folders
    named .ipynb_checkpoints are skipped. For each notebook name, the copy nearest the top of the learner's
    folder wins (a stale `old/01_framework.ipynb` never replaces `01_framework.ipynb`); deeper copies are
    named in the notes. Several copies at that same depth: none of them is graded, and the notes say why.
    Nothing is opened here: only names and lstat."""
    stems = {p.stem for p in solution_sources(chapter)}
    found, seen = Found(), {}  # stem -> [(depth, rel)]
    folder = Path(folder)
    if folder.is_symlink() or not folder.is_dir():
        found.notes.append(f"`{folder.name}` is not a folder (or is a symbolic link): not read")
        return found
    for top, dirs, files in os.walk(folder, followlinks=False):
        here = Path(top).relative_to(folder)
        for d in list(dirs):
            rel = here / d
            if d in SKIPPED_FOLDERS:
                dirs.remove(d)
            elif os.path.islink(Path(top) / d):  # os.walk does not follow it; say so when it could hold a notebook
                dirs.remove(d)
                found.notes.append(f"`{rel}/` is a symbolic link to a folder: not followed")
        for f in sorted(files):
            if not f.endswith(".ipynb") or f[: -len(".ipynb")] not in stems:
                continue
            rel = here / f
            try:
                problem = _refusal(rel, os.lstat(Path(top) / f))
            except OSError as err:
                problem = f"`{rel}` could not be examined ({err.strerror})"
            if problem:
                found.notes.append(problem)
            else:
                seen.setdefault(f[: -len(".ipynb")], []).append((len(rel.parts), rel))
        dirs.sort()
    for stem in sorted(seen):
        copies = sorted(seen[stem])
        top_depth = copies[0][0]
        winners = [rel for depth, rel in copies if depth == top_depth]
        if len(winners) > 1:
            found.notes.append(f"several copies of {stem}.ipynb at the same depth ({', '.join(f'`{w}`' for w in winners)}):"
                               f" none was graded; keep only the one to grade")
            continue
        found.paths.append(winners[0])
        for _, rel in copies[1:]:
            found.notes.append(f"`{rel}` was not graded: `{winners[0]}` (nearer the top of your folder) was")
    return found


def read_submitted(folder: Path, rel: Path) -> bytes:
    """The bytes of `folder/rel`, opened one component at a time without following any symbolic link (so a
    name swapped for a link after `find_notebooks` looked is refused too), only when it is a regular file of
    at most MAX_NOTEBOOK_BYTES. Raises OSError or ValueError with a message for the learner."""
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(folder, flags | os.O_DIRECTORY)
    try:
        for part in rel.parts[:-1]:
            if part in ("..", "."):
                raise ValueError(f"`{rel}` leaves the submission folder: not read")
            fd, parent = os.open(part, flags | os.O_DIRECTORY, dir_fd=fd), fd
            os.close(parent)
        fd, parent = os.open(rel.name, flags | os.O_NONBLOCK, dir_fd=fd), fd  # a FIFO opens at once, unread
        os.close(parent)
        problem = _refusal(rel, os.fstat(fd))
        if problem:
            raise ValueError(problem)
        chunks, size = [], 0
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
            size += len(chunk)
            if size > MAX_NOTEBOOK_BYTES:
                raise ValueError(f"`{rel}` grew past {MAX_NOTEBOOK_BYTES >> 20} MB while being read: not read")
        return b"".join(chunks)
    finally:
        os.close(fd)


def submitted_copies(chapter: str, where: str, tmp: Path) -> tuple[list[Path], list[str]]:
    """Safe private copies (in `tmp`) of the submission's notebooks, and why any was refused."""
    base = Path(where)
    if not base.is_symlink() and base.is_file():
        folder, found = base.parent, find_notebooks(chapter, base.parent)
        found.paths = [p for p in found.paths if p == Path(base.name)]
    else:
        folder, found = base, find_notebooks(chapter, base)
    files, problems = read_chosen(folder, found.paths)
    copies = []
    for i, (rel, data) in enumerate(files):
        (tmp / str(i)).mkdir()
        (tmp / str(i) / rel.name).write_bytes(data)
        copies.append(tmp / str(i) / rel.name)
    return copies, [n for n in found.notes if "not graded" not in n] + problems


def read_chosen(folder: Path, paths: list[Path]) -> tuple[list[tuple[Path, bytes]], list[str]]:
    """(path, bytes) of each chosen notebook (`find_notebooks(...).paths`) that could be read, and why any could not."""
    files, problems = [], []
    for rel in paths:
        try:
            files.append((rel, read_submitted(folder, rel)))
        except ValueError as err:
            problems.append(str(err))
        except OSError as err:  # ELOOP: a name swapped for a symbolic link after it was examined
            problems.append(_refusal(rel, os.lstat(folder / rel)) if err.errno == errno.ELOOP and (folder / rel).is_symlink()
                            else f"`{rel}` could not be read ({err.strerror})")
    return files, problems
