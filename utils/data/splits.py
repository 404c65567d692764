"""What every importer shares: the splits, where they go, all-or-nothing output, group splitting.

An importer writes images into `SplitOutputs.image_dir(split)` (temporaries) and adds CSV rows to
`SplitOutputs.rows[split]`; only when the whole `split_outputs()` block succeeds are images/<split>/ and
<split>_labels.csv renamed into place, so a failed run leaves the previous outputs untouched.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import random
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from utils.common.errors import UserError
from utils.common.fileio import atomic_outputs, unwritable_reason
from utils.data.labels_csv import write_labels_csv

SPLITS = ("train", "test", "eval")
DEFAULT_FRACTIONS = (0.8, 0.1, 0.1)  # of groups (videos, files), for train/test/eval


class OutputError(UserError):
    """An output location that cannot be written."""


def csv_path(output_dir: str | Path, split: str) -> Path:
    return Path(output_dir) / f"{split}_labels.csv"


def images_path(output_dir: str | Path, split: str) -> Path:
    return Path(output_dir) / "images" / split


def ensure_writable_dir(path: Path, flag: str = "--output-dir", error: type[UserError] = OutputError) -> None:
    """Create `path` if files can be written there (fileio.unwritable_reason), before any long work starts."""
    reason = unwritable_reason(path)
    if reason is None:
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            reason = exc.strerror or str(exc)
    if reason is not None:
        raise error(f"{path}: cannot write output here ({reason}); choose another {flag}")


def name_problem(name: str) -> str | None:
    """Why `name` cannot be an image file name in images/<split>/, or None: it must be one plain name
    (no folder part, so nothing lands outside the folder the user named), not hidden (our temporaries
    are), and text that every CSV reader can read (UTF-8; a file name that is not is refused here)."""
    if not name or name in (".", "..") or "/" in name or "\\" in name or "\0" in name:
        return "is not a plain file name"
    if name.startswith("."):
        return "starts with '.' (hidden)"
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return "is not valid UTF-8 (a file name from another system's encoding)"
    return None


class OutputNames:
    """The output image names of one run, each checked once as it is made (see claim)."""

    def __init__(self) -> None:
        self.claimed: dict[str, list[tuple[str | None, str]]] = {}  # name -> [(split or None: any, where from)]
        self._lock = threading.Lock()  # importers claim from worker threads

    def claim(self, name: str, where: str, split: str | None = None) -> str:
        """The one check of every output image name, before the image is written: a plain file name (see
        name_problem) no other image of this run has in the same split (`split` None: in any split, for
        images split after they are named). Two images that would flatten to one name (`a/x.jpg` and
        `a_x.jpg`) are an error here, never one image silently replacing the other. Returns `name`."""
        problem = name_problem(name)
        if problem is not None:
            raise OutputError(f"{where}: the output image name {name!r} {problem}; rename the image")
        with self._lock:
            for other_split, other in self.claimed.get(name, []):
                if split is None or other_split is None or other_split == split:
                    raise OutputError(f"{where}: its output image name {name!r} is also {other}'s; rename one "
                                      "of the two images (or keep one annotation per image)")
            self.claimed.setdefault(name, []).append((split, where))
        return name

    def release(self, name: str, split: str) -> str:
        """Give up a name in `split` (the image moves to another split); returns where it came from."""
        with self._lock:
            entries = self.claimed.get(name, [])
            found = next((e for e in entries if e[0] == split), (split, name))
            if found in entries:
                entries.remove(found)
            return found[1]


@dataclass
class SplitOutputs:
    """Temporary image folders per split and the CSV rows collected so far (see split_outputs)."""
    output_dir: Path
    dirs: dict[str, Path]
    rows: dict[str, list[tuple]] = field(default_factory=lambda: {s: [] for s in SPLITS})
    names: OutputNames = field(default_factory=OutputNames)

    def image_dir(self, split: str) -> Path:
        return self.dirs[split]

    def claim(self, name: str, where: str, split: str | None = None) -> str:
        """Check an image's output name before writing it (OutputNames.claim)."""
        return self.names.claim(name, where, split)

    def move_image(self, name: str, from_split: str, to_split: str) -> None:
        """Move a written image to another split (the name claimed again there)."""
        self.claim(name, self.names.release(name, from_split), to_split)
        os.replace(self.dirs[from_split] / name, self.dirs[to_split] / name)

    def images(self, split: str) -> int:
        return len({row[0] for row in self.rows[split]})


@contextlib.contextmanager
def split_outputs(output_dir: str | Path, error: type[UserError] = OutputError) -> Iterator[SplitOutputs]:
    """All-or-nothing images/<split>/ + <split>_labels.csv for every split under output_dir.

    Every split is (re)written, an empty one as an empty folder and a header-only CSV, so no split of
    an earlier run lingers beside the new ones. A run that keeps no box at all is an error (`error`) and
    writes nothing: an import that matched nothing must not replace earlier data with empty CSVs. Folders
    this run created (a new --output-dir, its images/) are removed again when it fails.
    """
    output_dir = Path(output_dir)
    created = [p for p in (output_dir, *output_dir.parents) if not p.exists()][::-1] + \
        ([] if (output_dir / "images").exists() else [output_dir / "images"])
    ensure_writable_dir(output_dir, error=error)
    try:
        # One swap for all folders and CSVs (never a moment with an old folder beside a new CSV, nor with
        # neither); temporaries of a killed run are cleaned first.
        with atomic_outputs() as swap:
            dirs = {}
            for split in SPLITS:
                dirs[split] = swap.path(images_path(output_dir, split))
                dirs[split].mkdir()
            outputs = SplitOutputs(output_dir, dirs)
            yield outputs
            if not any(outputs.rows.values()):
                raise error(f"{output_dir}: no image with a box to write (every annotation was left out, or the "
                            "input has none); nothing was written and the earlier images and CSVs are kept: check "
                            "the input and --category")
            for split in SPLITS:
                write_labels_csv(swap.path(csv_path(output_dir, split)), outputs.rows[split])
    except BaseException:
        for folder in reversed(created):  # only if still empty: never what someone else put there meanwhile
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise


# ----------------------------------------------------------------------------- splitting groups

def split_counts(num_groups: int, fractions: Sequence[float] = DEFAULT_FRACTIONS) -> tuple[int, int, int]:
    """How many groups go to train/test/eval.

    Largest-remainder rounding of the fractions (48 at 80/10/10 -> 38/5/5), then: train gets at least
    one group, and test, then eval, get one each (when their fraction is > 0) as long as train keeps one.
    So 1 group -> 1/0/0, 2 -> 1/1/0, 3 -> 1/1/1, 10 -> 8/1/1.
    """
    frac = np.asarray(fractions, dtype=np.float64)
    if frac.shape != (3,) or (frac < 0).any() or frac.sum() <= 0:
        raise ValueError(f"split fractions must be 3 non-negative numbers, not all 0: {list(fractions)}")
    frac = frac / frac.sum()
    ideal = frac * num_groups
    counts = np.floor(ideal).astype(int)
    by_remainder = sorted(range(3), key=lambda i: (-(ideal[i] - counts[i]), i))
    for i in by_remainder[:num_groups - counts.sum()]:
        counts[i] += 1
    if num_groups and counts[0] == 0:
        donor = max((2, 1), key=lambda i: counts[i])  # the larger of eval/test; eval on a tie
        counts[donor] -= 1
        counts[0] += 1
    for i in (1, 2):
        if frac[i] > 0 and counts[i] == 0 and counts[0] > 1:
            counts[0] -= 1
            counts[i] += 1
    return int(counts[0]), int(counts[1]), int(counts[2])


def split_groups(groups: Sequence[str], fractions: Sequence[float] = DEFAULT_FRACTIONS, seed: int = 0,
                 explicit: Mapping[str, Sequence[str] | None] | None = None, what: str = "video",
                 error: type[UserError] = UserError, flag: str = "--{split}-videos") -> dict[str, list[str]]:
    """Assign whole groups (videos, image files) to train/test/eval, each group to one split.

    Default: shuffle the sorted names with `seed` and cut by split_counts(). With explicit lists (split
    -> names; None = not given): test/eval get exactly their lists (empty when not given), train gets
    its list or, when not given, every group not named elsewhere. Raises `error` for an unknown group
    or one named in two splits (`what` names a group, `flag` the option with {split} in it).
    """
    groups = sorted(groups)
    explicit = {s: list(dict.fromkeys(v)) for s, v in (explicit or {}).items() if v is not None}
    if not explicit:
        order = list(groups)
        random.Random(seed).shuffle(order)
        n_train, n_test, _ = split_counts(len(order), fractions)
        cuts = {"train": order[:n_train], "test": order[n_train:n_train + n_test],
                "eval": order[n_train + n_test:]}
        return {s: sorted(cuts[s]) for s in SPLITS}
    known = set(groups)
    seen: dict[str, str] = {}
    for split in SPLITS:
        for group in explicit.get(split, []):
            if group not in known:
                shown = ", ".join(groups[:10]) + (f" ... ({len(groups)} in all)" if len(groups) > 10 else "")
                raise error(f"{flag.format(split=split)}: unknown {what} {group!r}; known: {shown}")
            if group in seen:
                raise error(f"{what} {group!r} is named in both {flag.format(split=seen[group])} and "
                            f"{flag.format(split=split)}; a {what} must be in one split only")
            seen[group] = split
    result = {s: sorted(explicit.get(s, [])) for s in SPLITS}
    if "train" not in explicit:
        result["train"] = [g for g in groups if g not in seen]
    return result


def split_weighted_groups(sizes: Mapping[str, int], fractions: Sequence[float] = DEFAULT_FRACTIONS,
                          seed: int = 0) -> dict[str, list[str]]:
    """Whole groups (capture sessions, videos) to train/test/eval so that each split's share of the *items*
    comes near `fractions`: groups in seeded order, each to the split furthest below its share.

    Groups of very different sizes (one session of 546 frames beside one of 7) make a cut by group count
    (split_groups) land anywhere from 1% to 45% of the images in eval; this keeps the shares. Every split
    whose fraction is > 0 gets at least one group while train keeps one (as split_counts). Largest groups
    go first; `seed` orders the groups of equal size.
    """
    frac = np.asarray(fractions, dtype=np.float64)
    if frac.shape != (3,) or (frac < 0).any() or frac.sum() <= 0:
        raise ValueError(f"split fractions must be 3 non-negative numbers, not all 0: {list(fractions)}")
    frac = frac / frac.sum()
    order = sorted(sizes)
    random.Random(seed).shuffle(order)
    # The largest groups are placed first (a big one placed last overshoots its split); ties keep the seeded order.
    order.sort(key=lambda g: -sizes[g])
    total = sum(sizes.values())
    wanted = [i for i in (1, 2) if frac[i] > 0][:max(0, len(order) - 1)]
    counts = np.zeros(3)
    result: dict[str, list[str]] = {s: [] for s in SPLITS}
    for k, group in enumerate(order):
        left = len(order) - k
        empty = [i for i in [0, *wanted] if not result[SPLITS[i]]]
        if len(empty) >= left:  # as many groups left as splits still empty: one each
            i = empty[0]
        else:
            i = int(np.argmax(frac * total - counts - np.where(frac > 0, 0, np.inf)))
        result[SPLITS[i]].append(group)
        counts[i] += sizes[group]
    return {s: sorted(v) for s, v in result.items()}


# argparse types shared by the dataset scripts
def fraction_arg(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"expected a fraction in [0, 1), got {text!r}")
    return value


def fractions_arg(text: str) -> tuple[float, float, float]:
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 3 or min(values) < 0 or sum(values) <= 0:
        raise argparse.ArgumentTypeError(f"expected 3 non-negative numbers like 0.8,0.1,0.1, got {text!r}")
    return values  # type: ignore[return-value]
