"""Mixed data sets: several sources (EgoHands, Oxford Hands, VOC folders, COCO jsons) -> one set of splits.

Every source is converted with its own importer into the same temporary split folders; with more
than one source each image file name starts with `<source>_` (no collisions) and every CSV row names
its source. Each source keeps its own split rule: EgoHands by video, Oxford by the archive's splits
(plus --carve-eval), VOC/COCO by file. All or nothing: a failing source leaves earlier outputs as they were.
"""
from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from utils.common.errors import UserError, pass_hint
from utils.data.splits import SPLITS, SplitOutputs, split_outputs

KINDS = ("egohands", "oxford", "voc", "coco")
_SPEC_RE = re.compile(r"^(?:(?P<name>[A-Za-z0-9][A-Za-z0-9-]*)=)?(?P<kind>[a-z]+)(?::(?P<path>.+))?$")


class SourceSpecError(UserError):
    """A DATASETS entry that cannot be used."""


@dataclass(frozen=True)
class SourceSpec:
    """One entry of DATASETS: `egohands`, `oxford`, `voc:PATH`, `coco:PATH`, optionally `NAME=` first."""
    kind: str
    name: str
    path: Path | None = None


def parse_source(text: str) -> SourceSpec:
    """'egohands' | 'oxford' | 'voc:DIR' | 'coco:JSON', each optionally 'NAME=...' (the source's name).

    'egohands:ZIP' and 'oxford:ARCHIVE' name a local archive.
    """
    match = _SPEC_RE.match(text.strip())
    kind = match.group("kind") if match else ""
    if not match or kind not in KINDS:
        raise SourceSpecError(f"DATASETS entry {text!r}: expected egohands, oxford, voc:DIR or coco:JSON "
                              "(optionally NAME= in front)")
    path = match.group("path")
    if kind in ("voc", "coco") and not path:
        raise SourceSpecError(f"DATASETS entry {text!r}: {kind} needs a path, e.g. {kind}:"
                              f"{'my_labels/' if kind == 'voc' else 'instances.json'}")
    return SourceSpec(kind, match.group("name") or kind, Path(path) if path else None)


def parse_sources(texts: Sequence[str]) -> list[SourceSpec]:
    specs = [parse_source(t) for t in texts]
    if not specs:
        raise SourceSpecError("DATASETS is empty; name at least one of egohands, oxford, voc:DIR, coco:JSON")
    names = [s.name for s in specs]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise SourceSpecError(f"DATASETS names source {repeated[0]!r} twice; give each its own name, e.g. "
                              f"mine={specs[names.index(repeated[0])].kind}:PATH")
    return specs


@dataclass
class SourceResult:
    name: str
    kind: str
    images: dict[str, int]
    boxes: dict[str, int]
    notes: list[str]


@dataclass
class MixOptions:
    """What the importers need besides the source list (each has a script flag of the same name)."""
    egohands_zip: Path | None = None
    oxford_archive: Path | None = None
    carve_eval: float = 0.0
    seed: int = 0
    categories: Sequence[str] | None = None
    keep_classes: bool = False
    workers: int = 2
    progress: bool | None = None
    fetch: Callable[[str], Path] | None = None  # kind -> downloaded archive, when no local one is given
    group_files: Sequence[tuple[str, Mapping[str, str]]] = ()  # (path, image name -> group), for voc/coco


def _counts(outputs: SplitOutputs, before: dict[str, int]) -> tuple[dict[str, int], dict[str, int]]:
    boxes = {s: len(outputs.rows[s]) - before[s] for s in SPLITS}
    images = {s: len({r[0] for r in outputs.rows[s][before[s]:]}) for s in SPLITS}
    return images, boxes


def _flag(spec: SourceSpec) -> str:
    """How the user names this source's local archive, for messages (a make variable under make)."""
    if spec.path is not None:
        return f"the DATASETS entry {spec.kind}:PATH"
    return pass_hint("--egohands-zip", "EGOHANDS_ZIP") if spec.kind == "egohands" else \
        pass_hint("--oxford-archive", "OXFORD_ARCHIVE")


def _archive(spec: SourceSpec, local: Path | None, options: MixOptions) -> Path:
    if spec.path is not None:
        return spec.path
    if local is not None:
        return local
    if options.fetch is None:
        raise SourceSpecError(f"{spec.kind}: no local archive; pass {_flag(spec)}")
    return options.fetch(spec.kind)


def import_source(outputs: SplitOutputs, spec: SourceSpec, prefix: str, options: MixOptions) -> list[str]:
    """Convert one source into `outputs`; returns notes worth printing."""
    if spec.kind == "egohands":
        from utils.data import egohands

        zip_path = _archive(spec, options.egohands_zip, options)
        with egohands.open_zip(zip_path, _flag(spec)) as zf:
            videos = egohands.index_videos(zf.namelist(), str(zip_path))
        splits = egohands.split_videos(list(videos), seed=options.seed)
        egohands.convert_zip_into(outputs, zip_path, splits, workers=options.workers, progress=options.progress,
                                  prefix=prefix, source=spec.name)
        return [f"{s} videos: {', '.join(v)}" for s, v in splits.items() if v]
    if spec.kind == "oxford":
        from utils.data.oxford import ARCHIVE_SPLITS, convert_archive_into

        result = convert_archive_into(outputs, _archive(spec, options.oxford_archive, options), options.carve_eval,
                                      options.seed, prefix=prefix, source=spec.name, progress=options.progress,
                                      flag=_flag(spec))
        notes = [f"archive has no {k} split" for k in ARCHIVE_SPLITS if k not in result.archive_splits]
        if result.carved:
            notes.append(f"eval carved from training: {', '.join(result.carved)}")
        return notes
    from utils.data.annotated import HAND_CLASS, image_groups, import_into, keep_categories, read_labels, split_images

    images, known = read_labels(spec.kind, spec.path)
    # --category applies to the sources that define it; a category no VOC/COCO source has is an error
    wanted = [c for c in options.categories or [] if c in known] or None
    images, without = keep_categories(images, wanted, known, str(spec.path),
                                      None if options.keep_classes else HAND_CLASS)
    groups, notes = None, []
    for where, named in options.group_files:
        groups = image_groups(images, named, where)
        if groups is not None:
            notes.append(f"split by the {len(set(groups.values()))} groups of {where}")
            break
    import_into(outputs, split_images(images, seed=options.seed, groups=groups), spec.name, prefix, options.progress)
    return notes + ([f"{without} image(s) without a kept box left out"] if without else [])


def build_mixed(output_dir: str | Path, specs: Sequence[SourceSpec], options: MixOptions) -> list[SourceResult]:
    """images/<split>/ + <split>_labels.csv under output_dir from every source; all or nothing."""
    labelled = [s for s in specs if s.kind in ("voc", "coco")]
    if options.categories and labelled:
        known: set[str] = set()
        from utils.data.annotated import read_labels

        for spec in labelled:  # read twice (here and when importing): labels are small, images are not read
            known |= set(read_labels(spec.kind, spec.path)[1])
        unknown = [c for c in options.categories if c not in known]
        if unknown:
            raise SourceSpecError(f"--category {unknown[0]!r}: no voc/coco source has it (they have "
                                  f"{', '.join(sorted(known)) or 'none'})")
    results = []
    with split_outputs(output_dir) as outputs:
        for spec in specs:
            before = {s: len(outputs.rows[s]) for s in SPLITS}
            prefix = f"{spec.name}_" if len(specs) > 1 else ""
            notes = import_source(outputs, spec, prefix, options)
            images, boxes = _counts(outputs, before)
            if not any(boxes.values()):  # a source that matched nothing is a mistake, not an empty share
                raise SourceSpecError(f"{spec.path or spec.kind}: source {spec.name!r} gave no image with a box "
                                      "(every annotation left out?); nothing was written: check it and --category")
            results.append(SourceResult(spec.name, spec.kind, images, boxes, notes))
    return results
